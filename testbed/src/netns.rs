//! Network namespaces: hosts, the fabric, containers.

use std::ops::Deref;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::process::{output, run};
use crate::require::{bin, require_netns};
use crate::sweep;

/// A uniquely named network namespace (`<prefix>-tb<pid>-<n>`) with `lo` up.
///
/// Drop kills every process still inside it (`ip netns pids`) and deletes it; it does not fail
/// if the namespace is already gone.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace and brings `lo` up.
    #[track_caller]
    pub fn new(prefix: &str) -> Self {
        require_netns();
        sweep::sweep_once();
        let name = sweep::netns_name(prefix);
        if let Err(e) = run(Command::new(bin("ip")).args(["netns", "add", &name])) {
            panic!("testbed: {e}");
        }
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace name (as for `ip netns exec NAME`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/var/run/netns/NAME` (open it for `setns`).
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// A `Command` running `cmd[0] cmd[1..]` inside the namespace (`ip netns exec NAME ...`),
    /// e.g. to spawn a background process. Panics if `cmd` is empty.
    pub fn command(&self, cmd: &[&str]) -> Command {
        assert!(!cmd.is_empty(), "testbed: empty command");
        let mut c = Command::new(bin("ip"));
        c.args(["netns", "exec", &self.name]).args(cmd);
        c
    }

    /// Runs `cmd` inside the namespace to completion and returns its output, whatever the status.
    #[track_caller]
    pub fn exec(&self, cmd: &[&str]) -> Output {
        output(&mut self.command(cmd)).unwrap_or_else(|e| panic!("testbed: {e}"))
    }

    /// Runs `cmd` inside the namespace; its stdout, or `Err` with status and stderr.
    pub fn try_run(&self, cmd: &[&str]) -> Result<String, String> {
        run(&mut self.command(cmd))
    }

    /// Runs `cmd` inside the namespace; its stdout. Panics with stderr on failure.
    #[track_caller]
    pub fn run(&self, cmd: &[&str]) -> String {
        self.try_run(cmd).unwrap_or_else(|e| panic!("testbed: {e}"))
    }

    /// `ip -n NAME ARGS`, panicking with stderr on failure.
    #[track_caller]
    pub fn ip(&self, args: &[&str]) -> String {
        self.try_ip(args).unwrap_or_else(|e| panic!("testbed: {e}"))
    }

    /// `ip -n NAME ARGS`.
    pub fn try_ip(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new(bin("ip")).args(["-n", &self.name]).args(args))
    }

    /// `ip -n NAME -j ARGS` parsed as JSON.
    #[track_caller]
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let out = run(Command::new(bin("ip")).args(["-n", &self.name, "-j"]).args(args))
            .unwrap_or_else(|e| panic!("testbed: {e}"));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("testbed: bad JSON from ip ({e}): {out}"))
    }

    /// Whether a link `ifname` exists in the namespace.
    pub fn has_link(&self, ifname: &str) -> bool {
        self.try_ip(&["link", "show", "dev", ifname]).is_ok()
    }

    /// MAC address of link `ifname` ("aa:bb:..").
    #[track_caller]
    pub fn mac(&self, ifname: &str) -> String {
        let v = self.ip_json(&["link", "show", "dev", ifname]);
        v[0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("testbed: no MAC for {ifname} in {}: {v}", self.name))
            .to_string()
    }

    /// IPv4 addresses (without prefix length) of link `ifname`.
    #[track_caller]
    pub fn ipv4_addrs(&self, ifname: &str) -> Vec<String> {
        let v = self.ip_json(&["-4", "addr", "show", "dev", ifname]);
        v[0]["addr_info"]
            .as_array()
            .map(|a| a.iter().filter_map(|i| i["local"].as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    /// Whether a namespace with this name exists (in `ip netns list`).
    pub fn exists(name: &str) -> bool {
        PathBuf::from("/var/run/netns").join(name).exists()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        sweep::delete_netns(&self.name);
    }
}

/// A container: just a uniquely named empty [`Netns`] (`lo` up) for the agent to plug.
/// Derefs to [`Netns`].
pub struct Container {
    netns: Netns,
}

impl Container {
    /// A new container netns named `<prefix>-tb<pid>-<n>`.
    #[track_caller]
    pub fn new(prefix: &str) -> Self {
        Container { netns: Netns::new(prefix) }
    }

    /// The container's namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }
}

impl Deref for Container {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.netns
    }
}

/// `ping -c COUNT -W TIMEOUT IP` inside `from`; true if at least one reply came back
/// (ping's exit status). Packets go out every 0.2 s.
pub fn ping(from: &Netns, ip: &str, count: u32, timeout: Duration) -> bool {
    let count = count.max(1).to_string();
    let w = format!("{:.1}", timeout.as_secs_f64().max(0.1));
    from.exec(&["ping", "-n", "-q", "-i", "0.2", "-c", &count, "-W", &w, ip]).status.success()
}

/// Pings `ip` from `from` once a try until a reply comes back; panics after `deadline`.
#[track_caller]
pub fn wait_ping(from: &Netns, ip: &str, deadline: Duration) {
    crate::wait_until(deadline, &format!("{ip} to answer ping from {}", from.name()), || {
        ping(from, ip, 1, Duration::from_millis(500))
    });
}
