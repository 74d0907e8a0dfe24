//! Fault tests (the reliability issue), one module per kind of fault: etcd going away and
//! coming back and etcd compaction ([`etcd`]), ovsdb-server and ovs-vswitchd restarts
//! ([`ovs`]), a peer vanishing and returning with a new underlay IP ([`peer`]), the agent killed
//! mid-plug / mid-unplug / mid-reconcile ([`agent_killed`]), and many plugs at once ([`load`]).
//! Each runs several hosts with traffic flowing and checks what a user sees: ping, `status`,
//! `ovs-vsctl`, the keys in etcd.

mod agent_killed;
mod etcd;
mod load;
mod ovs;
mod peer;

use std::collections::BTreeSet;
use std::time::Duration;

use overlay_tests::{ofport_of, tunnel_sources, tunnels, AgentProc, Cluster};
use serde_json::Value;
use testbed::{Container, TestHost};

const WAIT: Duration = Duration::from_secs(20);

fn plug(agent: &AgentProc, id: &str, tenant: &str, c: &Container) -> Value {
    overlay_tests::plug(agent, id, tenant, c, &[])
}

/// The (peer, tenant) pairs `host` tunnels with: for each tenant port, the hosts its flows
/// accept frames from (by name; an address no host of `c` has, as is).
fn tunnel_pairs(c: &Cluster, host: &TestHost) -> BTreeSet<(String, String)> {
    let name_of = |ip: &str| {
        c.hosts.iter().find(|h| h.underlay_ip().to_string() == ip).map_or(ip.to_owned(), |h| h.name().to_owned())
    };
    tunnels(host)
        .into_iter()
        .flat_map(|(name, t)| {
            let tenant = t.external_ids["overlay-tenant"].clone();
            let sources = ofport_of(host, &name).map(|o| tunnel_sources(host, o)).unwrap_or_default();
            sources.into_iter().map(move |ip| (name_of(&ip), tenant.clone())).collect::<Vec<_>>()
        })
        .collect()
}

/// Waits until host `i` has exactly the tunnels `want` ((peer index, tenant) pairs); on timeout
/// panics with what it has and the end of its agent's log.
#[track_caller]
fn expect_pairs(c: &Cluster, i: usize, want: &[(usize, &str)]) {
    let host = &c.hosts[i];
    let want: BTreeSet<(String, String)> =
        want.iter().map(|(p, t)| (c.hosts[*p].name().to_owned(), (*t).to_owned())).collect();
    let got = try_wait(WAIT, || {
        let got = tunnel_pairs(c, host);
        if got == want {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    });
    if let Err(e) = got {
        panic!(
            "tunnels on {}: want {want:?}, have {e}\n--- agent log (end) ---\n{}",
            host.name(),
            c.agents[i].log_tail(60)
        );
    }
}

/// Polls `f` until it returns Ok; the last error on timeout.
fn try_wait(deadline: Duration, mut f: impl FnMut() -> Result<(), String>) -> Result<(), String> {
    let mut last = String::new();
    testbed::try_wait_for(deadline, "", || match f() {
        Ok(()) => Some(()),
        Err(e) => {
            last = e;
            None
        }
    })
    .map_err(|_| last)
}

/// Bridge, Port and Interface names on `host` are unique (no row was created twice).
fn assert_no_duplicate_rows(host: &TestHost) {
    for table in ["Bridge", "Port", "Interface"] {
        let out = host.vsctl(&["--bare", "--columns=name", "list", table]);
        let names: Vec<&str> = out.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let unique: BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(names.len(), unique.len(), "duplicate {table} rows on {}: {names:?}", host.name());
    }
    let bridges = host.vsctl(&["list-br"]);
    let bridges: Vec<&str> = bridges.lines().collect();
    assert_eq!(bridges, ["br-int", "br-phy", "br-tun"], "bridges on {}", host.name());
}
