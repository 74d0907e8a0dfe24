//! podman with the CNI network backend and everything of its own in a temp dir: storage, run
//! state, network configurations (`*.conflist`), containers.conf. Run inside a test host's
//! network namespace with `nsenter --net` when one is given.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

use crate::netns::Netns;
use crate::process::{output, run};
use crate::require::{require_binary, require_file, require_root};
use crate::sweep;

const HINT: &str = "apt-get install podman containernetworking-plugins";

/// The image [`Podman::import_busybox`] makes.
pub const BUSYBOX_IMAGE: &str = "localhost/tb/busybox:1";

/// A podman setup. Drop removes its containers and what they left mounted, then its directory.
pub struct Podman {
    netns: Option<PathBuf>,
    dir: TempDir,
}

impl Podman {
    /// A podman whose CNI plugins are looked up in `cni_plugin_dirs` (then Debian's
    /// /usr/lib/cni), run inside `netns` if given.
    #[track_caller]
    pub fn new(netns: Option<&Netns>, cni_plugin_dirs: &[&Path]) -> Podman {
        require_root();
        require_binary("podman", HINT);
        require_binary("conmon", HINT);
        require_binary("runc", HINT);
        require_file("/usr/lib/cni/loopback", HINT);
        require_binary("nsenter", "apt-get install util-linux");
        sweep::sweep_once();
        let dir = sweep::temp_dir("podman");
        for d in ["net.d", "tmp", "root", "runroot"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap_or_else(|e| panic!("testbed: cannot create {d}: {e}"));
        }
        let plugin_dirs: Vec<String> = cni_plugin_dirs
            .iter()
            .map(|d| format!("{:?}", d.display().to_string()))
            .chain([r#""/usr/lib/cni""#.to_owned()])
            .collect();
        // No CAP_SYS_RESOURCE here: podman's default rlimits (nofile 1048576) cannot be set, so
        // keep them within the caller's hard limits. No systemd: cgroupfs, events to a file.
        let conf = format!(
            "[containers]\nlog_driver = \"k8s-file\"\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
             [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [{}]\nnetwork_config_dir = {:?}\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nevents_logfile_path = {:?}\nruntime = \"runc\"\n",
            plugin_dirs.join(", "),
            dir.path().join("net.d").display().to_string(),
            dir.path().join("events.log").display().to_string(),
        );
        std::fs::write(dir.path().join("containers.conf"), conf)
            .unwrap_or_else(|e| panic!("testbed: containers.conf: {e}"));
        Podman { netns: netns.map(Netns::path), dir }
    }

    /// Where its network configurations go (`NAME.conflist`).
    pub fn network_dir(&self) -> PathBuf {
        self.dir.path().join("net.d")
    }

    /// A `podman ARGS` command with this setup's storage, state and configuration.
    pub fn command(&self, args: &[&str]) -> Command {
        let podman = crate::require::bin("podman");
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new(crate::require::bin("nsenter"));
                c.arg(format!("--net={}", ns.display())).arg(podman);
                c
            }
            None => Command::new(podman),
        };
        let d = self.dir.path();
        c.env("CONTAINERS_CONF", d.join("containers.conf"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .arg("--network-config-dir")
            .arg(d.join("net.d"))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args(args);
        c
    }

    /// Runs `podman ARGS`, whatever its status.
    #[track_caller]
    pub fn podman(&self, args: &[&str]) -> Output {
        output(&mut self.command(args)).unwrap_or_else(|e| panic!("testbed: {e}"))
    }

    /// Runs `podman ARGS`; stdout, or `Err` with the status and stderr.
    pub fn try_podman(&self, args: &[&str]) -> Result<String, String> {
        run(&mut self.command(args))
    }

    /// Runs `podman ARGS`, panicking with stderr on failure.
    #[track_caller]
    pub fn podman_ok(&self, args: &[&str]) -> String {
        self.try_podman(args).unwrap_or_else(|e| panic!("testbed: {e}"))
    }

    /// Imports the busybox image ([`BUSYBOX_IMAGE`]); returns its name.
    #[track_caller]
    pub fn import_busybox(&self) -> &'static str {
        let tar = crate::busybox::busybox_rootfs(self.dir.path());
        let tar = tar.display().to_string();
        self.podman_ok(&["import", "-c", r#"CMD ["/bin/sh"]"#, &tar, BUSYBOX_IMAGE]);
        let _ = std::fs::remove_file(&tar);
        BUSYBOX_IMAGE
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if let Err(e) = self.try_podman(&["rm", "-af", "-t", "0"]) {
            eprintln!("testbed: {e}");
        }
        crate::mounts::unmount_all_under(self.dir.path());
    }
}
