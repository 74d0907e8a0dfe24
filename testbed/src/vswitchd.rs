//! A private `ovs-vswitchd` with its own temp dir as OVS run dir, unixctl socket, pidfile and
//! log.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::process::{appctl, deref_to_process, in_netns, run, tail, Process};
use crate::require::{bin, require_ovs};
use crate::sweep::{self, Claim};
use crate::wait::wait_for;
use crate::OvsdbServer;

/// How long ovs-vswitchd may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a root-namespace ovs-vswitchd waits for another one to go.
const ROOT_CLAIM_TIMEOUT: Duration = Duration::from_secs(120);

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
/// Derefs to its [`Process`] (pid, temp dir; [`Process::kill`] is a crash, its tap devices
/// stay).
pub struct Vswitchd {
    process: Process,
    db_sock: PathBuf,
    netns: Option<String>,
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
        let v = Vswitchd {
            process: Process::new("ovs-vswitchd", sweep::temp_dir("vswitchd")),
            db_sock: ovsdb.socket_path(),
            netns: netns.map(str::to_string),
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
        self.process.daemon.spawn(cmd);
        let what = format!("ovs-vswitchd in {} to answer ovs-appctl version", d.display());
        wait_for(START_TIMEOUT, &what, || {
            if let Some(e) = self.process.daemon.exited() {
                panic!("testbed: {e}\nlog:\n{}", tail(&self.log_path(), 20));
            }
            self.try_appctl(&["version"]).ok()
        });
    }

    /// Starts ovs-vswitchd again (killing it first if it runs), same db, dirs and sockets. (Its
    /// temp dir is the OVS run dir and holds its log, pidfile and unixctl socket.)
    #[track_caller]
    pub fn restart(&self) {
        self.kill();
        self.launch();
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
        appctl(&self.ctl_path(), args)
    }

    /// Like [`Vswitchd::try_appctl`], panicking on failure.
    #[track_caller]
    pub fn appctl(&self, args: &[&str]) -> String {
        self.try_appctl(args).unwrap_or_else(|e| panic!("testbed: {e}"))
    }
}

deref_to_process!(Vswitchd);

impl Drop for Vswitchd {
    fn drop(&mut self) {
        if self.netns.is_none() && self.is_running() {
            let _ = self.try_appctl(&["exit", "--cleanup"]);
            self.process.daemon.wait_or_kill(Duration::from_secs(5));
        }
        self.kill();
    }
}
