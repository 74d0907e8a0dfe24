//! [`Cluster`]: hosts on one fabric, one etcd, one agent per host.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use testbed::{Etcd, TestHost};

use crate::{flows_on, AgentProc};

/// A test cluster: hosts on one fabric, one etcd, one agent per host.
pub struct Cluster {
    // Field order is drop order: agents before the hosts they manage, etcd last.
    /// The agents, one per host, same order.
    pub agents: Vec<AgentProc>,
    /// The hosts.
    pub hosts: Vec<TestHost>,
    /// etcd.
    pub etcd: Etcd,
    /// The etcd prefix of this cluster.
    pub prefix: String,
    _fabric: testbed::Fabric,
}

impl Cluster {
    /// Pings `ip` from `from` until a reply comes (20 s at most); on a timeout, panics with what
    /// a person would look at first: the container's addresses, neighbours and routes, each
    /// host's bridges and ports as ovs-vswitchd sees them, and the end of each agent's log.
    #[track_caller]
    pub fn wait_ping(&self, from: &testbed::Netns, ip: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if testbed::ping(from, ip, 1, Duration::from_millis(500)) {
                return;
            }
        }
        let run = |args: &[&str]| String::from_utf8_lossy(&from.exec(args).stdout).into_owned();
        let mut report = format!(
            "{ip} did not answer ping from {} within 20 s\n--- addresses ---\n{}--- neighbours ---\n{}--- routes ---\n{}",
            from.name(),
            run(&["ip", "addr"]),
            run(&["ip", "neigh"]),
            run(&["ip", "route"])
        );
        for (host, agent) in self.hosts.iter().zip(&self.agents) {
            let interfaces = host.vsctl(&["--columns=name,ofport,error,link_state", "list", "Interface"]);
            let log = agent.logs();
            let tail: Vec<&str> = log.lines().filter(|l| !l.contains("reconcile pass")).collect();
            let flows: String = ["br-tun", "br-int"]
                .iter()
                .map(|b| format!("--- {b} flows ---\n{}\n", flows_on(host, b).join("\n")))
                .collect();
            report += &format!(
                "--- {} ---\n{}{}\n{flows}--- its agent's log (end) ---\n{}\n",
                host.name(),
                host.vsctl(&["show"]),
                interfaces,
                tail[tail.len().saturating_sub(20)..].join("\n")
            );
        }
        panic!("{report}");
    }

    /// `n` hosts with agents started with `extra` flags.
    pub fn start(n: u8, extra: &[&str]) -> Cluster {
        Self::start_prepared(n, extra, |_| {})
    }

    /// [`Cluster::start`], with `prepare` run on each host before any agent starts (e.g. to
    /// give every OVS database one `system-id`, as machines built from one image have).
    pub fn start_prepared(n: u8, extra: &[&str], prepare: impl Fn(&TestHost)) -> Cluster {
        let etcd = Etcd::start();
        let fabric = testbed::Fabric::new();
        let prefix = format!("/{}", testbed::unique_name("ov"));
        let hosts: Vec<TestHost> = (1..=n).map(|i| fabric.add_host(i)).collect();
        hosts.iter().for_each(prepare);
        let agents = hosts.iter().map(|h| AgentProc::start(h, &etcd, &prefix, extra)).collect();
        Cluster { agents, hosts, etcd, prefix, _fabric: fabric }
    }

    /// Another host on the cluster's fabric, with no agent (the caller starts one).
    pub fn add_host(&self, index: u8) -> TestHost {
        self._fabric.add_host(index)
    }

    /// Every etcd key under the cluster prefix that starts with `sub` (e.g. "ips/").
    pub fn etcd_keys(&self, sub: &str) -> Vec<String> {
        let out = self.etcd.etcdctl(&["get", "--prefix", "--keys-only", &format!("{}/{sub}", self.prefix)]);
        out.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
    }

    /// Every key under `<prefix>/<sub>` with its value parsed as JSON (`null` where a value is
    /// not JSON).
    pub fn etcd_kvs(&self, sub: &str) -> BTreeMap<String, Value> {
        let out = self.etcd.etcdctl(&["get", "--prefix", &format!("{}/{sub}", self.prefix)]);
        let lines: Vec<&str> = out.lines().collect();
        lines
            .chunks(2)
            .filter(|kv| kv.len() == 2)
            .map(|kv| (kv[0].to_owned(), serde_json::from_str(kv[1]).unwrap_or(Value::Null)))
            .collect()
    }
}
