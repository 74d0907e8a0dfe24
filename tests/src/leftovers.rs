//! What a container runtime's plugin must never leave behind on a host: checked the same way
//! after Docker and podman tests, interrupted or not.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::{ports_on, Cluster};

/// The endpoint records of host `i`, by port name.
pub fn endpoint_records(c: &Cluster, i: usize) -> BTreeMap<String, Value> {
    let me = c.hosts[i].name();
    c.etcd_kvs("endpoints/")
        .into_values()
        .filter(|e| e["host"] == me)
        .map(|e| (e["port"].as_str().unwrap_or_default().to_owned(), e))
        .collect()
}

/// Whether host `i` is consistent: its container ports on br-int are exactly its endpoint
/// records' ports, every address its agent holds belongs to an endpoint (reservations made for
/// a plug to come are allowed only if `pending_ok`), and every veth the agent names (`tap*` host
/// ends, `hnd*` hand-off ends) has a port. `Err` says what is left over.
pub fn check_host(c: &Cluster, i: usize, pending_ok: bool) -> Result<(), String> {
    let host = &c.hosts[i];
    let me = host.name();
    let ports: BTreeSet<String> = ports_on(host, "br-int")
        .into_values()
        .filter(|p| p.external_ids.get("overlay-kind").map(String::as_str) == Some("container"))
        .map(|p| p.name)
        .collect();
    let endpoints = endpoint_records(c, i);
    let recorded: BTreeSet<String> = endpoints.keys().cloned().collect();
    if ports != recorded {
        return Err(format!("on {me}: container ports {ports:?} != endpoint records {recorded:?}"));
    }
    for (key, claim) in c.etcd_kvs("ips/").into_iter().filter(|(_, v)| v["host"] == me) {
        let ip = key.rsplit('/').next().unwrap_or_default();
        let reservation = claim["ifname"] == "";
        let held = endpoints.values().any(|e| e["container_id"] == claim["container"] && e["ip"] == ip);
        let allowed_pending = reservation && pending_ok;
        if !(held || allowed_pending) {
            return Err(format!("on {me}: address {key} ({claim}) has no endpoint"));
        }
    }
    let links = host.netns().ip_json(&["link", "show"]);
    for name in links.as_array().into_iter().flatten().filter_map(|l| l["ifname"].as_str()) {
        // `ip` shows a veth as NAME@PEER only in text output; the JSON name is bare.
        if (name.starts_with("tap") || name.starts_with("hnd")) && name.len() == 15 {
            let port_of_it = ports.contains(name)
                || endpoints
                    .values()
                    .any(|e| e["container_id"].as_str().is_some_and(|c| overlay_api::handoff_name(c, "eth0") == name));
            if !port_of_it {
                return Err(format!("on {me}: veth {name} is left without a port"));
            }
        }
    }
    Ok(())
}

/// Waits (30 s at most: an abandoned reservation expires after 15 s) until [`check_host`]
/// passes without pending reservations; panics with the last difference and `context`.
#[track_caller]
pub fn wait_clean(c: &Cluster, i: usize, context: &str) {
    if let Err(e) =
        testbed::try_wait_for(std::time::Duration::from_secs(30), "a clean host", || check_host(c, i, false).ok())
    {
        let last = check_host(c, i, false).err().unwrap_or_default();
        panic!("{context}: {e}: {last}\n--- agent log (end) ---\n{}", c.agents[i].log_tail(40));
    }
}
