//! Private `ovsdb-server` and `ovs-vswitchd` instances, each with its own temp dir, sockets,
//! pidfile, log and OVS run dir.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{in_netns, run, tail, Daemon};
use crate::require::{bin, require_ovs, VSWITCH_SCHEMA};
use crate::sweep::{self, Claim};
use crate::wait::wait_for;

/// How long a daemon may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a root-namespace ovs-vswitchd waits for another one to go.
const ROOT_CLAIM_TIMEOUT: Duration = Duration::from_secs(120);

/// A private `ovsdb-server` on a fresh `conf.db` (vswitch schema, root row created), listening on
/// a unix socket in its temp dir and on `ptcp:<port>:127.0.0.1`.
///
/// Run as a child process (not `--detach`); [`OvsdbServer::kill`] simulates a crash and
/// [`OvsdbServer::restart`] starts it again on the same database, socket path and TCP port.
/// Drop kills it and removes the temp dir.
///
/// When started in a network namespace ([`OvsdbServer::start_in`]), the unix socket is reachable
/// from every namespace (it is a file), while the TCP remote is on that namespace's loopback.
pub struct OvsdbServer {
    daemon: Daemon,
    netns: Option<String>,
    port: AtomicU16,
    dir: TempDir,
}

impl OvsdbServer {
    /// Starts a server in the current (root) network namespace.
    #[track_caller]
    pub fn start() -> Self {
        Self::start_in(None)
    }

    /// Starts a server, inside network namespace `netns` (via `ip netns exec`) if given.
    #[track_caller]
    pub fn start_in(netns: Option<&str>) -> Self {
        require_ovs();
        sweep::sweep_once();
        let dir = sweep::temp_dir("ovsdb");
        let db = dir.path().join("conf.db");
        crate::process::run_ok(Command::new(bin("ovsdb-tool")).arg("create").arg(&db).arg(VSWITCH_SCHEMA));
        let server = OvsdbServer {
            daemon: Daemon::new("ovsdb-server", dir.path()),
            netns: netns.map(str::to_string),
            port: AtomicU16::new(0),
            dir,
        };
        server.launch(0);
        server.vsctl(&["init"]);
        server
    }

    #[track_caller]
    fn launch(&self, port: u16) {
        let log = self.log_path();
        // The old process is dead: its socket file is stale.
        let _ = std::fs::remove_file(self.socket_path());
        let d = self.dir();
        let mut cmd = in_netns(self.netns.as_deref(), &bin("ovsdb-server"));
        cmd.arg(d.join("conf.db"))
            .arg(format!("--remote=punix:{}", self.socket_path().display()))
            .arg(format!("--remote=ptcp:{port}:127.0.0.1"))
            .arg(format!("--unixctl={}", d.join("ovsdb.ctl").display()))
            .arg(format!("--pidfile={}", d.join("ovsdb.pid").display()))
            .arg(format!("--log-file={}", log.display()))
            .env("OVS_RUNDIR", d)
            .env("OVS_DBDIR", d);
        self.daemon.spawn(cmd);
        let sock = self.socket_path();
        let what = format!("ovsdb-server in {} to listen (unix socket and ptcp:{port})", d.display());
        // If the TCP port is still taken, ovsdb-server keeps retrying to bind it by itself.
        let got = wait_for(START_TIMEOUT, &what, || {
            if let Some(e) = self.daemon.exited() {
                panic!("testbed: {e}\nlog:\n{}", tail(&log, 20));
            }
            UnixStream::connect(&sock).ok()?;
            let ports = listening_tcp_ports(self.daemon.pid()?);
            match port {
                0 => ports.first().copied(),
                p => ports.contains(&p).then_some(p),
            }
        });
        self.port.store(got, Ordering::SeqCst);
    }

    /// SIGKILL (a crash: no cleanup by the server). The database file stays.
    pub fn kill(&self) {
        self.daemon.kill();
    }

    /// Starts the server again (killing it first if it runs) on the same database file, unix
    /// socket path and TCP port; waits until both listen.
    #[track_caller]
    pub fn restart(&self) {
        self.daemon.kill();
        self.launch(self.tcp_port());
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.daemon.pid().is_some()
    }

    /// Pid of the server, if running.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// The temp dir holding conf.db, db.sock, ovsdb.ctl, ovsdb.pid, ovsdb.log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the database file.
    pub fn db_path(&self) -> PathBuf {
        self.dir().join("conf.db")
    }

    /// Path of the unix socket.
    pub fn socket_path(&self) -> PathBuf {
        self.dir().join("db.sock")
    }

    /// Path of the server log.
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("ovsdb.log")
    }

    /// `unix:<dir>/db.sock`.
    pub fn unix_remote(&self) -> String {
        format!("unix:{}", self.socket_path().display())
    }

    /// TCP port on 127.0.0.1 (of the server's network namespace).
    pub fn tcp_port(&self) -> u16 {
        self.port.load(Ordering::SeqCst)
    }

    /// `tcp:127.0.0.1:<port>` (reachable only from the server's network namespace).
    pub fn tcp_remote(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.tcp_port())
    }

    /// The network namespace the server runs in, if any.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    fn vsctl_cmd(&self, wait: bool, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("ovs-vsctl"));
        if wait {
            cmd.arg("--timeout=30");
        } else {
            cmd.args(["--no-wait", "--timeout=10"]);
        }
        cmd.arg(format!("--db={}", self.unix_remote())).args(args);
        cmd
    }

    /// `ovs-vsctl --no-wait --timeout=10 --db=unix:... ARGS`; stdout, or `Err` with stderr.
    pub fn try_vsctl(&self, args: &[&str]) -> Result<String, String> {
        run(&mut self.vsctl_cmd(false, args))
    }

    /// Like [`OvsdbServer::try_vsctl`], panicking on failure.
    #[track_caller]
    pub fn vsctl(&self, args: &[&str]) -> String {
        self.try_vsctl(args).unwrap_or_else(|e| panic!("testbed: {e}"))
    }

    /// `ovs-vsctl --timeout=30 --db=unix:... ARGS` WITHOUT `--no-wait`: after a change, waits
    /// until ovs-vswitchd has applied it (needs a running [`Vswitchd`]). Panics on failure.
    #[track_caller]
    pub fn vsctl_wait(&self, args: &[&str]) -> String {
        run(&mut self.vsctl_cmd(true, args)).unwrap_or_else(|e| panic!("testbed: {e}"))
    }
}

/// TCP ports on which process `pid` itself has a listening IPv4 socket: the sockets among its
/// file descriptors that `/proc/<pid>/net/tcp` (its own network namespace) lists as LISTEN.
/// (ovsdb-server logs "listening on port N" only for `ptcp:0`, not for a fixed port.)
fn listening_tcp_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    let mut ports: Vec<u16> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
            if *state != "0A" || !inodes.iter().any(|i| i == inode) {
                return None;
            }
            u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// A private `ovs-vswitchd` connected to an [`OvsdbServer`] by its unix socket, with its own temp
/// dir as OVS run dir (`OVS_RUNDIR`: bridge `<br>.mgmt`/`<br>.snoop` sockets go there), unixctl
/// socket `vswitchd.ctl`, pidfile and log.
///
/// Only ONE ovs-vswitchd with userspace (netdev) bridges can run per network namespace: each
/// creates a tap device `ovs-netdev` for its datapath, and a second one fails with "creating tap
/// device failed: Device or resource busy". Give each its own namespace (as [`crate::TestHost`]
/// does). Started in the root namespace (`netns` = `None`), it takes a machine-wide claim first,
/// so such tests wait for each other, across processes too (and must not run beside a system
/// ovs-vswitchd).
///
/// Drop: SIGKILL inside a network namespace (the namespace takes the datapath's tap devices with
/// it); in the root namespace `ovs-appctl exit --cleanup` first so no tap device is left behind.
pub struct Vswitchd {
    daemon: Daemon,
    db_sock: PathBuf,
    netns: Option<String>,
    dir: TempDir,
    _root_claim: Option<Claim>,
}

impl Vswitchd {
    /// Starts ovs-vswitchd for `ovsdb`, inside network namespace `netns` if given; waits until it
    /// answers `ovs-appctl version`.
    #[track_caller]
    pub fn start(ovsdb: &OvsdbServer, netns: Option<&str>) -> Self {
        require_ovs();
        sweep::sweep_once();
        let root_claim = netns.is_none().then(|| {
            Claim::acquire(
                "root-netns-vswitchd",
                ROOT_CLAIM_TIMEOUT,
                "the root network namespace's ovs-vswitchd slot (held by another test)",
            )
        });
        let dir = sweep::temp_dir("vswitchd");
        let v = Vswitchd {
            daemon: Daemon::new("ovs-vswitchd", dir.path()),
            db_sock: ovsdb.socket_path(),
            netns: netns.map(str::to_string),
            dir,
            _root_claim: root_claim,
        };
        v.launch();
        v
    }

    #[track_caller]
    fn launch(&self) {
        let d = self.dir();
        let _ = std::fs::remove_file(self.ctl_path());
        let mut cmd = in_netns(self.netns.as_deref(), &bin("ovs-vswitchd"));
        cmd.arg(format!("unix:{}", self.db_sock.display()))
            .arg(format!("--pidfile={}", d.join("vswitchd.pid").display()))
            .arg(format!("--unixctl={}", self.ctl_path().display()))
            .arg(format!("--log-file={}", self.log_path().display()))
            .env("OVS_RUNDIR", d);
        self.daemon.spawn(cmd);
        let what = format!("ovs-vswitchd in {} to answer ovs-appctl version", d.display());
        wait_for(START_TIMEOUT, &what, || {
            if let Some(e) = self.daemon.exited() {
                panic!("testbed: {e}\nlog:\n{}", tail(&self.log_path(), 20));
            }
            self.try_appctl(&["version"]).ok()
        });
    }

    /// SIGKILL (a crash). Tap devices of the userspace datapath stay.
    pub fn kill(&self) {
        self.daemon.kill();
    }

    /// Starts ovs-vswitchd again (killing it first if it runs), same db, dirs and sockets.
    #[track_caller]
    pub fn restart(&self) {
        self.daemon.kill();
        self.launch();
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.daemon.pid().is_some()
    }

    /// Pid, if running.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// The temp dir (OVS run dir, log, pidfile, unixctl socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The unixctl socket (`ovs-appctl -t <this>`).
    pub fn ctl_path(&self) -> PathBuf {
        self.dir().join("vswitchd.ctl")
    }

    /// The log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("vswitchd.log")
    }

    /// The OpenFlow management socket ovs-vswitchd opens for `bridge` in its run dir
    /// (`<OVS_RUNDIR>/<bridge>.mgmt`); it exists once the bridge is configured.
    pub fn mgmt_socket(&self, bridge: &str) -> PathBuf {
        self.rundir().join(format!("{bridge}.mgmt"))
    }

    /// Its `OVS_RUNDIR`, where the bridges' management sockets are.
    pub fn rundir(&self) -> PathBuf {
        self.dir().to_path_buf()
    }

    /// `ovs-ofctl --timeout=30 ARGS` with `{mgmt:BRIDGE}` in any argument replaced by
    /// `unix:<run dir>/BRIDGE.mgmt`; stdout (trimmed) or `Err` with the command and stderr.
    /// Example: `ofctl(&["-O", "OpenFlow13", "dump-flows", "{mgmt:br0}"])`.
    pub fn try_ofctl(&self, args: &[&str]) -> Result<String, String> {
        let args: Vec<String> = args
            .iter()
            .map(|a| match a.strip_prefix("{mgmt:").and_then(|r| r.strip_suffix('}')) {
                Some(bridge) => format!("unix:{}", self.mgmt_socket(bridge).display()),
                None => (*a).to_string(),
            })
            .collect();
        run(Command::new(bin("ovs-ofctl")).arg("--timeout=30").args(&args))
    }

    /// Like [`Vswitchd::try_ofctl`], panicking on failure.
    #[track_caller]
    pub fn ofctl(&self, args: &[&str]) -> String {
        self.try_ofctl(args).unwrap_or_else(|e| panic!("testbed: {e}"))
    }

    /// Adds a userspace (`datapath_type=netdev`) bridge through `ovsdb` with `extra` columns
    /// (`fail_mode=secure`, `protocols=OpenFlow13`, ...), waits until ovs-vswitchd has applied
    /// it, and returns the path of its management socket.
    #[track_caller]
    pub fn add_netdev_bridge(&self, ovsdb: &OvsdbServer, bridge: &str, extra: &[&str]) -> PathBuf {
        let mut args = vec!["add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev"];
        args.extend_from_slice(extra);
        ovsdb.vsctl_wait(&args);
        let sock = self.mgmt_socket(bridge);
        wait_for(START_TIMEOUT, &format!("{} to accept connections", sock.display()), || {
            UnixStream::connect(&sock).ok()
        });
        sock
    }

    /// `ovs-appctl --timeout=10 -t <ctl> ARGS`; stdout or `Err` with stderr.
    pub fn try_appctl(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new(bin("ovs-appctl")).arg("--timeout=10").arg("-t").arg(self.ctl_path()).args(args))
    }

    /// Like [`Vswitchd::try_appctl`], panicking on failure.
    #[track_caller]
    pub fn appctl(&self, args: &[&str]) -> String {
        self.try_appctl(args).unwrap_or_else(|e| panic!("testbed: {e}"))
    }
}

impl Drop for Vswitchd {
    fn drop(&mut self) {
        if self.netns.is_none() && self.is_running() {
            let _ = self.try_appctl(&["exit", "--cleanup"]);
            self.daemon.wait_or_kill(Duration::from_secs(5));
        }
        self.daemon.kill();
    }
}
