//! Reading the OVSDB rows the agent built, with OVS's own tools (an independent reader).

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;
use testbed::TestHost;

/// A Port with its Interface, as `ovs-vsctl` reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct PortRow {
    /// Port name.
    pub name: String,
    /// Port `_uuid`.
    pub uuid: String,
    /// Port `_version` (changes on every write).
    pub version: String,
    /// Port `tag`.
    pub tag: Option<i64>,
    /// Port `protected`.
    pub protected: bool,
    /// Port `external_ids`.
    pub external_ids: BTreeMap<String, String>,
    /// Interface `type`.
    pub kind: String,
    /// Interface `options`.
    pub options: BTreeMap<String, String>,
    /// Interface `_uuid`.
    pub iface_uuid: String,
    /// Interface `_version`.
    pub iface_version: String,
    /// Interface `external_ids`.
    pub iface_external_ids: BTreeMap<String, String>,
}

fn ovs_map(v: &Value) -> BTreeMap<String, String> {
    v[1].as_array()
        .into_iter()
        .flatten()
        .map(|kv| (kv[0].as_str().unwrap_or_default().to_owned(), kv[1].as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// Rows of `table` read with OVS's own `ovsdb-client` (ovs-vsctl cannot show `_version`).
fn list(host: &TestHost, table: &str, columns: &[&str]) -> Vec<BTreeMap<String, Value>> {
    let query = serde_json::json!(["Open_vSwitch", {"op": "select", "table": table, "where": [], "columns": columns}]);
    let out = Command::new("ovsdb-client")
        .args(["transact", &host.ovsdb_remote(), &query.to_string()])
        .output()
        .expect("running ovsdb-client (apt-get install openvswitch-common)");
    assert!(out.status.success(), "ovsdb-client transact failed: {}", String::from_utf8_lossy(&out.stderr));
    let j: Value = serde_json::from_slice(&out.stdout).expect("ovsdb-client JSON");
    j[0]["rows"]
        .as_array()
        .expect("select rows")
        .iter()
        .map(|r| r.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .collect()
}

/// Every port on `bridge` with its interface.
pub fn ports_on(host: &TestHost, bridge: &str) -> BTreeMap<String, PortRow> {
    let names_out = host.try_vsctl(&["list-ports", bridge]).unwrap_or_default();
    let wanted: Vec<&str> = names_out.lines().filter(|l| !l.is_empty()).collect();
    let ifaces: BTreeMap<String, BTreeMap<String, Value>> =
        list(host, "Interface", &["_uuid", "_version", "name", "type", "options", "external_ids"])
            .into_iter()
            .map(|r| (r["name"].as_str().unwrap().to_owned(), r))
            .collect();
    list(host, "Port", &["_uuid", "_version", "name", "tag", "protected", "external_ids"])
        .into_iter()
        .filter(|r| wanted.contains(&r["name"].as_str().unwrap()))
        .map(|r| {
            let name = r["name"].as_str().unwrap().to_owned();
            let i = &ifaces[&name];
            let tag = r["tag"].as_i64();
            (
                name.clone(),
                PortRow {
                    name,
                    uuid: r["_uuid"][1].as_str().unwrap().to_owned(),
                    version: r["_version"][1].as_str().unwrap().to_owned(),
                    tag,
                    protected: r["protected"].as_bool().unwrap_or(false),
                    external_ids: ovs_map(&r["external_ids"]),
                    kind: i["type"].as_str().unwrap_or_default().to_owned(),
                    options: ovs_map(&i["options"]),
                    iface_uuid: i["_uuid"][1].as_str().unwrap().to_owned(),
                    iface_version: i["_version"][1].as_str().unwrap().to_owned(),
                    iface_external_ids: ovs_map(&i["external_ids"]),
                },
            )
        })
        .collect()
}

/// The tunnel ports on `br-tun` (ports whose interface is vxlan or gre).
pub fn tunnels(host: &TestHost) -> BTreeMap<String, PortRow> {
    ports_on(host, "br-tun").into_iter().filter(|(_, p)| p.kind == "vxlan" || p.kind == "gre").collect()
}

/// The tenant tunnel ports of `host` whose flows accept frames from `peer`'s underlay address.
pub fn tunnels_to(host: &TestHost, peer: &TestHost) -> BTreeMap<String, PortRow> {
    let from = peer.underlay_ip().to_string();
    tunnels(host)
        .into_iter()
        .filter(|(name, _)| ofport_of(host, name).is_some_and(|o| tunnel_sources(host, o).contains(&from)))
        .collect()
}

/// The flows of `bridge` on `host` as `ovs-ofctl -O OpenFlow13 dump-flows --no-stats` prints them
/// (an independent reader of what the agent installed), one per line, sorted.
pub fn flows_on(host: &TestHost, bridge: &str) -> Vec<String> {
    let mgmt = format!("{{mgmt:{bridge}}}");
    let out = host.vswitchd().ofctl(&["-O", "OpenFlow13", "dump-flows", "--no-stats", &mgmt]);
    let mut lines: Vec<String> = out.lines().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()).collect();
    lines.sort();
    lines
}

/// The underlay addresses `host`'s br-tun accepts tunnelled frames from for the tenant whose
/// tunnel port has ofport `tunnel_ofport` (its flows matching `in_port=N` and `tun_src=IP`).
pub fn tunnel_sources(host: &TestHost, tunnel_ofport: u32) -> std::collections::BTreeSet<String> {
    let in_port = format!("in_port={tunnel_ofport}");
    flows_on(host, "br-tun")
        .iter()
        .filter_map(|f| {
            let matching = f.split(" actions=").next()?;
            let fields: Vec<&str> = matching.split([',', ' ']).collect();
            if !fields.contains(&in_port.as_str()) {
                return None;
            }
            fields.iter().find_map(|f| f.strip_prefix("tun_src=")).map(str::to_owned)
        })
        .collect()
}

/// The ofport ovs-vswitchd gave interface `name` on `host`.
pub fn ofport_of(host: &TestHost, name: &str) -> Option<u32> {
    host.try_vsctl(&["get", "Interface", name, "ofport"]).ok().and_then(|s| s.trim().parse().ok()).filter(|p| *p > 0)
}
