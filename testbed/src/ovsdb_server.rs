//! A private `ovsdb-server` with its own temp dir, database, sockets, pidfile and log.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use crate::process::{appctl, deref_to_process, in_netns, run, tail, Process};
use crate::require::{bin, require_ovs, VSWITCH_SCHEMA};
use crate::sweep;
use crate::wait::wait_for;

/// How long ovsdb-server may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A private `ovsdb-server` on a fresh `conf.db` (vswitch schema, root row created), listening on
/// a unix socket in its temp dir and on `ptcp:<port>:127.0.0.1`.
///
/// Run as a child process (not `--detach`); [`OvsdbServer::kill`] simulates a crash and
/// [`OvsdbServer::restart`] starts it again on the same database, socket path and TCP port.
/// Drop kills it and removes the temp dir. Derefs to its [`Process`] (pid, temp dir).
///
/// When started in a network namespace ([`OvsdbServer::start_in`]), the unix socket is reachable
/// from every namespace (it is a file), while the TCP remote is on that namespace's loopback.
pub struct OvsdbServer {
    process: Process,
    netns: Option<String>,
    port: AtomicU16,
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
        let process = Process::new("ovsdb-server", sweep::temp_dir("ovsdb"));
        let db = process.dir().join("conf.db");
        crate::process::run_ok(Command::new(bin("ovsdb-tool")).arg("create").arg(&db).arg(VSWITCH_SCHEMA));
        let server = OvsdbServer { process, netns: netns.map(str::to_string), port: AtomicU16::new(0) };
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
        self.process.daemon.spawn(cmd);
        let sock = self.socket_path();
        let what = format!("ovsdb-server in {} to listen (unix socket and ptcp:{port})", d.display());
        // If the TCP port is still taken, ovsdb-server keeps retrying to bind it by itself.
        let got = wait_for(START_TIMEOUT, &what, || {
            if let Some(e) = self.process.daemon.exited() {
                panic!("testbed: {e}\nlog:\n{}", tail(&log, 20));
            }
            UnixStream::connect(&sock).ok()?;
            let ports = listening_tcp_ports(self.pid()?);
            match port {
                0 => ports.first().copied(),
                p => ports.contains(&p).then_some(p),
            }
        });
        self.port.store(got, Ordering::SeqCst);
    }

    /// Starts the server again (killing it first if it runs) on the same database file, unix
    /// socket path and TCP port; waits until both listen. (Its temp dir holds conf.db, db.sock,
    /// ovsdb.ctl, ovsdb.pid, ovsdb.log; [`Process::kill`] is a crash, the database file stays.)
    #[track_caller]
    pub fn restart(&self) {
        self.kill();
        self.launch(self.tcp_port());
    }

    /// `ovs-appctl --timeout=10 -t <dir>/ovsdb.ctl ARGS` (e.g. `memory/show`); stdout or `Err`
    /// with stderr.
    pub fn try_appctl(&self, args: &[&str]) -> Result<String, String> {
        appctl(&self.dir().join("ovsdb.ctl"), args)
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

deref_to_process!(OvsdbServer);

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
