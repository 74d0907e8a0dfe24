//! Helpers shared by the multi-host tests: an [`AgentProc`] fixture that runs the real
//! `overlay-agent` binary against a [`testbed::TestHost`] and an [`testbed::Etcd`], and readers
//! of the OVSDB rows the agent built (through `ovs-vsctl`, an independent tool).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use testbed::{Container, Etcd, TestHost};

pub mod cni;
pub mod docker;
pub mod leftovers;
mod pinger;

pub use pinger::{PingReport, Pinger};

/// The last `n` lines of everything `agent` logged.
pub fn log_tail(agent: &AgentProc, n: usize) -> String {
    let logs = agent.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.contains("reconcile pass")).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Plugs container `c` into `tenant` through `agent` (by its namespace file, with `extra`
/// flags); returns the plug's JSON answer.
pub fn plug(agent: &AgentProc, id: &str, tenant: &str, c: &Container, extra: &[&str]) -> Value {
    let path = c.path().display().to_string();
    let mut args = vec!["plug", id, "--tenant", tenant, "--netns", path.as_str()];
    args.extend_from_slice(extra);
    serde_json::from_str(&agent.cli_ok(&args)).expect("plug prints JSON")
}

/// A binary of this workspace built by cargo (`overlay-cni`, ...), from the directory the
/// test binaries run from.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --workspace --bins` (make test does)",
        bin.display()
    );
    bin
}

/// The `overlay-agent` binary built by cargo for this workspace.
pub fn agent_binary() -> PathBuf {
    // Integration tests run from target/<profile>/deps; the binary is one level up.
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("overlay-agent");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p overlay-agent` (make test does)",
        bin.display()
    );
    bin
}

/// A running agent for one test host.
pub struct AgentProc {
    child: Option<Child>,
    dir: tempfile::TempDir,
    args: Vec<String>,
    /// The hostname it registers.
    pub hostname: String,
    starts: u32,
}

impl AgentProc {
    /// Arguments of `overlay-agent run` for `host` (before `extra`).
    pub fn run_args(host: &TestHost, etcd: &Etcd, prefix: &str, api_socket: &Path) -> Vec<String> {
        Self::run_args_for(host, &etcd.endpoint(), prefix, api_socket)
    }

    /// [`AgentProc::run_args`] for any etcd endpoint (e.g. https).
    pub fn run_args_for(host: &TestHost, etcd_endpoint: &str, prefix: &str, api_socket: &Path) -> Vec<String> {
        vec![
            "run".into(),
            "--hostname".into(),
            host.name().into(),
            "--underlay-ip".into(),
            host.underlay_ip().to_string(),
            "--etcd-endpoints".into(),
            etcd_endpoint.to_owned(),
            "--etcd-prefix".into(),
            prefix.into(),
            "--ovsdb".into(),
            host.ovsdb_remote(),
            "--datapath-type".into(),
            "netdev".into(),
            "--ovs-rundir".into(),
            host.vswitchd().rundir().display().to_string(),
            "--host-netns".into(),
            host.netns().path().display().to_string(),
            "--api-socket".into(),
            api_socket.display().to_string(),
            // The machine identity lives here: the same for every start of this agent, its own.
            "--state-dir".into(),
            api_socket.parent().expect("the API socket is in the agent's dir").join("state").display().to_string(),
            "--liveness-ttl".into(),
            "2".into(),
            "--log-level".into(),
            "info,overlay_agent=debug".into(),
        ]
    }

    /// Starts the agent and waits until its API answers.
    pub fn start(host: &TestHost, etcd: &Etcd, prefix: &str, extra: &[&str]) -> Self {
        Self::start_with(host, &etcd.endpoint(), prefix, extra)
    }

    /// [`AgentProc::start`] against any etcd endpoint.
    pub fn start_with(host: &TestHost, etcd_endpoint: &str, prefix: &str, extra: &[&str]) -> Self {
        let mut a = Self::spawn_with(host, etcd_endpoint, prefix, &[], extra);
        a.wait_ready();
        a
    }

    /// Starts an agent for `host` with some flags of [`AgentProc::run_args`] changed
    /// (`overrides`, e.g. `("--hostname", "h1")`) and `extra` ones added, without waiting.
    pub fn spawn_with(
        host: &TestHost,
        etcd_endpoint: &str,
        prefix: &str,
        overrides: &[(&str, &str)],
        extra: &[&str],
    ) -> Self {
        let dir = tempfile::Builder::new().prefix("agent-").tempdir().expect("tempdir");
        let args = Self::run_args_for(host, etcd_endpoint, prefix, &dir.path().join("api.sock"));
        let mut a = AgentProc { child: None, dir, args, hostname: host.name().to_owned(), starts: 0 };
        for (flag, value) in overrides {
            a.set_arg(flag, value);
            if *flag == "--hostname" {
                a.hostname = (*value).to_owned();
            }
        }
        // An empty config file: every key comes from the flags, never from a file that may
        // exist on the machine running the tests.
        let config = a.dir.path().join("agent.toml");
        std::fs::write(&config, "").expect("config file");
        a.args.extend(["--config".to_owned(), config.display().to_string()]);
        a.args.extend(extra.iter().map(|s| s.to_string()));
        a.spawn();
        a
    }

    /// Waits until the agent says it does not hold its hostname; returns why (status's
    /// `identity_conflict`).
    pub fn wait_refused(&mut self) -> String {
        self.wait_answering(|s| s["host"]["identity_conflict"].is_string(), "refused");
        self.status()["host"]["identity_conflict"].as_str().expect("conflict").to_owned()
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path_n(self.starts)).expect("log file");
        let child = Command::new(agent_binary())
            .args(&self.args)
            .env_remove("OVERLAY_API_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawning overlay-agent");
        self.child = Some(child);
    }

    fn log_path_n(&self, n: u32) -> PathBuf {
        self.dir.path().join(format!("agent-{n}.log"))
    }

    /// Everything the agent logged, all runs.
    pub fn logs(&self) -> String {
        (1..=self.starts).map(|n| std::fs::read_to_string(self.log_path_n(n)).unwrap_or_default()).collect()
    }

    /// The API socket.
    pub fn api_socket(&self) -> PathBuf {
        self.dir.path().join("api.sock")
    }

    /// Waits until the agent is registered (or the process died: then panics with its log).
    pub fn wait_ready(&mut self) {
        self.wait_answering(|s| s["host"]["registered"] == true, "registered");
    }

    /// Waits until `status` answers and `ready` holds for it (or the process died: then panics
    /// with its log).
    pub fn wait_answering(&mut self, ready: impl Fn(&Value) -> bool, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("overlay-agent for {} exited with {status}:\n{}", self.hostname, self.logs());
            }
            if self.api_socket().exists() {
                let out = self.cli(&["status", "--json"]);
                let status: Option<Value> =
                    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten();
                if status.is_some_and(|s| ready(&s)) {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "agent {} not {what} within 20 s:\n{}",
                self.hostname,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs an `overlay-agent` CLI command against this agent.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(agent_binary())
            .arg("--api-socket")
            .arg(self.api_socket())
            .args(args)
            .output()
            .expect("running the overlay-agent CLI")
    }

    /// Runs a CLI command that must succeed; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "overlay-agent {args:?} failed: {}\n--- agent log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `status --json`.
    pub fn status(&self) -> Value {
        serde_json::from_str(&self.cli_ok(&["status", "--json"])).expect("status JSON")
    }

    /// SIGTERM and wait for exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() {
                if std::time::Instant::now() > deadline {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Pid of the running agent process, if it runs (e.g. to SIGSTOP it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Changes the value of `flag` (e.g. `--underlay-ip`) for the next [`AgentProc::restart`],
    /// adding the flag if it was not given.
    pub fn set_arg(&mut self, flag: &str, value: &str) {
        match self.args.iter().position(|a| a == flag) {
            Some(i) => self.args[i + 1] = value.to_owned(),
            None => self.args.extend([flag.to_owned(), value.to_owned()]),
        }
    }

    /// SIGKILL (a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the same agent again (after stop or kill) and waits until it is ready.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the agent first");
        self.spawn();
        self.wait_ready();
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill();
    }
}

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

/// The tunnel ports on `br-tun` (ports whose interface is vxlan or gre).
pub fn tunnels(host: &TestHost) -> BTreeMap<String, PortRow> {
    ports_on(host, "br-tun").into_iter().filter(|(_, p)| p.kind == "vxlan" || p.kind == "gre").collect()
}

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
        let etcd = Etcd::start();
        let fabric = testbed::Fabric::new();
        let prefix = format!("/{}", testbed::unique_name("ov"));
        let hosts: Vec<TestHost> = (1..=n).map(|i| fabric.add_host(i)).collect();
        let agents = hosts.iter().map(|h| AgentProc::start(h, &etcd, &prefix, extra)).collect();
        Cluster { agents, hosts, etcd, prefix, _fabric: fabric }
    }

    /// A cluster of hosts and agents made by the caller (hosts set up before their agents start).
    pub fn from_parts(
        agents: Vec<AgentProc>,
        hosts: Vec<TestHost>,
        etcd: Etcd,
        prefix: String,
        fabric: testbed::Fabric,
    ) -> Cluster {
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
}
