//! A private dockerd inside a test host's network namespace: its own data root, exec root (its
//! own containerd), API socket and logs in a temp dir, no bridge, no iptables rules, address
//! pools inside the test range. Started with `nsenter --net` (not `ip netns exec`, whose new
//! mount namespace hides the cgroup v1 mounts dockerd needs), so the interfaces a network
//! plugin hands Docker are looked up in that host's namespace.
//!
//! Docker finds plugins in machine-wide directories only (`/run/docker/plugins`,
//! `/etc/docker/plugins`), so a test names its plugins uniquely ([`plugin_name`]) and registers
//! each one with a `.spec` file ([`Dockerd::add_plugin_spec`]) removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use tempfile::TempDir;

use crate::names::DIR_MARKER;
use crate::netns::Netns;
use crate::process::{describe, output, run, tail, Daemon};
use crate::require::{require_binary, require_file, require_root};
use crate::sweep;

const HINT: &str = "apt-get install docker.io (Debian 12: Docker 20.10)";

/// Debian's docker CLI, by path: a newer CLI earlier in `$PATH` may not speak to dockerd 20.10
/// the same way.
pub const DOCKER_CLI: &str = "/usr/bin/docker";

/// Where dockerd reads plugin spec files (machine-wide).
pub const PLUGIN_SPEC_DIR: &str = "/etc/docker/plugins";

/// The image [`Dockerd::import_busybox`] makes.
pub const BUSYBOX_IMAGE: &str = "tb/busybox:1";

/// A plugin name unique to this process and call, recognisable by the sweeper:
/// `tbfix-<pid>-<prefix><n>`.
pub fn plugin_name(prefix: &str) -> String {
    format!("{DIR_MARKER}{}-{prefix}{}", std::process::id(), crate::names::base36(crate::names::next_counter()))
}

/// A running private dockerd. Drop removes its containers, stops it (SIGTERM, SIGKILL after
/// 20 s), unmounts what it left mounted, and removes its spec files and directory.
pub struct Dockerd {
    daemon: Daemon,
    specs: Mutex<Vec<PathBuf>>,
    dir: TempDir,
}

impl Dockerd {
    /// Starts dockerd inside `netns` and waits until its API answers.
    #[track_caller]
    pub fn start(netns: &Netns) -> Dockerd {
        require_root();
        let dockerd = require_binary("dockerd", HINT);
        require_file(DOCKER_CLI, HINT);
        require_binary("containerd", HINT);
        require_binary("runc", HINT);
        let nsenter = require_binary("nsenter", "apt-get install util-linux");
        sweep::sweep_once();
        let dir = sweep::temp_dir("docker");
        let config = dir.path().join("daemon.json");
        // The default pools would be 172.17/16 and up: keep anything Docker makes in the test range.
        let daemon_json = r#"{"default-address-pools": [{"base": "198.19.240.0/21", "size": 24}],
            "storage-driver": "overlay2", "log-driver": "json-file"}"#;
        std::fs::write(&config, daemon_json)
            .unwrap_or_else(|e| panic!("testbed: cannot write {}: {e}", config.display()));
        let mut cmd = Command::new(nsenter);
        cmd.arg(format!("--net={}", netns.path().display()))
            .arg(dockerd)
            .arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(dir.path().join("root"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", dir.path().join("docker.sock").display()))
            .arg("--pidfile")
            .arg(dir.path().join("docker.pid"))
            .args(["--bridge=none", "--iptables=false", "--ip-masq=false", "--userland-proxy=false"]);
        let daemon = Daemon::new("dockerd", dir.path());
        daemon.spawn(cmd);
        let d = Dockerd { daemon, specs: Mutex::new(Vec::new()), dir };
        crate::wait_for(Duration::from_secs(30), "dockerd to answer", || {
            if let Some(why) = d.daemon.exited() {
                panic!("testbed: {why}");
            }
            d.try_docker(&["version", "--format", "{{.Server.Version}}"]).ok()
        });
        d
    }

    /// The API address, for `docker -H` and `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    /// A `docker -H HOST ARGS` command.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(DOCKER_CLI);
        // The CLI's own config stays here, not in ~/.docker.
        c.env("DOCKER_CONFIG", self.dir.path().join("cli")).arg("-H").arg(self.host()).args(args);
        c
    }

    /// Runs `docker ARGS`, whatever its status.
    #[track_caller]
    pub fn docker(&self, args: &[&str]) -> Output {
        output(&mut self.command(args)).unwrap_or_else(|e| panic!("testbed: {e}"))
    }

    /// Runs `docker ARGS`; stdout, or `Err` with the status and stderr.
    pub fn try_docker(&self, args: &[&str]) -> Result<String, String> {
        run(&mut self.command(args))
    }

    /// Runs `docker ARGS`, panicking with stderr (and the daemon's log) on failure.
    #[track_caller]
    pub fn docker_ok(&self, args: &[&str]) -> String {
        self.try_docker(args)
            .unwrap_or_else(|e| panic!("testbed: {e}\n--- dockerd log (end) ---\n{}", self.log_tail(30)))
    }

    /// Imports the busybox image ([`BUSYBOX_IMAGE`]); returns its name.
    #[track_caller]
    pub fn import_busybox(&self) -> &'static str {
        let tar = crate::busybox::busybox_rootfs(self.dir.path());
        let tar = tar.display().to_string();
        self.docker_ok(&["import", "-c", r#"CMD ["/bin/sh"]"#, &tar, BUSYBOX_IMAGE]);
        let _ = std::fs::remove_file(&tar);
        BUSYBOX_IMAGE
    }

    /// Registers plugin `name` (from [`plugin_name`]) as served on `socket`:
    /// `/etc/docker/plugins/NAME.spec` holding `unix://SOCKET`.
    #[track_caller]
    pub fn add_plugin_spec(&self, name: &str, socket: &Path) {
        std::fs::create_dir_all(PLUGIN_SPEC_DIR)
            .unwrap_or_else(|e| panic!("testbed: cannot create {PLUGIN_SPEC_DIR}: {e}"));
        let spec = Path::new(PLUGIN_SPEC_DIR).join(format!("{name}.spec"));
        std::fs::write(&spec, format!("unix://{}\n", socket.display()))
            .unwrap_or_else(|e| panic!("testbed: cannot write {}: {e}", spec.display()));
        self.specs.lock().unwrap_or_else(|e| e.into_inner()).push(spec);
    }

    /// A private directory of this dockerd's, for the test's own files (sockets, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `n` lines of dockerd's log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.dir.path().join("dockerd.stderr"), n)
    }

    /// Removes every container (`rm -f`): what a test does before the plugin its containers use
    /// goes away (Docker retries a dead plugin for 15 s per call).
    pub fn remove_all_containers(&self) {
        if let Ok(ids) = self.try_docker(&["ps", "-aq"]) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                if let Err(e) = self.try_docker(&args) {
                    eprintln!("testbed: {e}");
                }
            }
        }
    }

    /// Removes every network a test made (`docker network rm` of the non-default ones).
    pub fn remove_all_networks(&self) {
        if let Ok(ids) = self.try_docker(&["network", "ls", "--filter", "type=custom", "-q"]) {
            for id in ids.split_whitespace() {
                if let Err(e) = self.try_docker(&["network", "rm", id]) {
                    eprintln!("testbed: {e}");
                }
            }
        }
    }

    fn stop(&self) {
        self.remove_all_containers();
        if let Some(pid) = self.daemon.pid() {
            let term = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            if term.is_err() {
                eprintln!("testbed: cannot SIGTERM dockerd {pid}: {}", describe(&Command::new("kill")));
            }
            self.daemon.wait_or_kill(Duration::from_secs(20));
        }
        crate::mounts::unmount_all_under(self.dir.path());
        for spec in self.specs.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = std::fs::remove_file(spec);
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}
