//! Leftovers of dead test processes: a test process killed by SIGKILL (a harness timeout, an
//! abort) runs no Drop. Every resource this crate makes carries the pid of its maker, so the first
//! fixture of a later process removes what belongs to processes that no longer exist:
//! - processes whose command line names a `tbfix-<pid>-` temp dir (ovsdb-server, ovs-vswitchd,
//!   etcd),
//! - network namespaces named `<prefix>-tb<pid>-<n>` (after killing what runs in them),
//! - `tbfix-<pid>-*` temp dirs (after unmounting what a container runtime left mounted in them),
//!   Docker plugin spec files and claims (underlay subnets, the root-netns ovs-vswitchd).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

use tempfile::TempDir;

use crate::names::DIR_MARKER;
use crate::process::{kill_pid, pid_alive, run};
use crate::require::bin;

/// A fresh temp dir `tbfix-<pid>-<what>-XXXXXX` under the system temp dir.
pub(crate) fn temp_dir(what: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("{DIR_MARKER}{}-{what}-", std::process::id()))
        .tempdir()
        .unwrap_or_else(|e| panic!("testbed: cannot create a temp dir: {e}"))
}

/// Network namespace name for `prefix`: `<prefix>-tb<pid>-<n>`.
pub(crate) fn netns_name(prefix: &str) -> String {
    format!("{prefix}-tb{}-{}", std::process::id(), crate::names::base36(crate::names::next_counter()))
}

/// Owner pid of a netns named by [`netns_name`].
fn netns_owner(name: &str) -> Option<u32> {
    let mut parts = name.rsplitn(3, '-');
    let _counter = parts.next()?;
    let pid = parts.next()?.strip_prefix("tb")?;
    parts.next()?;
    pid.parse().ok()
}

/// Owner pid of a `tbfix-<pid>-...` file name.
fn dir_owner(name: &str) -> Option<u32> {
    name.strip_prefix(DIR_MARKER)?.split('-').next()?.parse().ok()
}

/// Dir holding machine-wide claims (underlay subnets, the root-netns vswitchd): one file per
/// claim, created exclusively, holding the owner pid.
pub(crate) fn claims_dir() -> PathBuf {
    std::env::temp_dir().join("testbed-claims")
}

/// A machine-wide exclusive claim on `name`, released on drop (or when its owner process is
/// gone).
pub(crate) struct Claim {
    file: PathBuf,
}

impl Claim {
    /// Takes the claim if it is free (or held by a dead process).
    pub(crate) fn try_acquire(name: &str) -> Option<Claim> {
        let dir = claims_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("testbed: cannot create {}: {e}", dir.display()));
        let file = dir.join(name);
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&file) {
                Ok(mut f) => {
                    use std::io::Write;
                    let _ = write!(f, "{}", std::process::id());
                    return Some(Claim { file });
                }
                Err(_) => {
                    let owner = std::fs::read_to_string(&file).ok().and_then(|s| s.trim().parse::<u32>().ok());
                    // A file still empty is being written by a live owner.
                    if !owner.is_some_and(dead) {
                        return None;
                    }
                    let _ = std::fs::remove_file(&file);
                }
            }
        }
        None
    }

    /// Waits up to `deadline` for the claim.
    #[track_caller]
    pub(crate) fn acquire(name: &str, deadline: std::time::Duration, what: &str) -> Claim {
        crate::wait_for(deadline, what, || Claim::try_acquire(name))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

fn dead(pid: u32) -> bool {
    pid != std::process::id() && !pid_alive(pid)
}

/// Runs [`sweep_stale`] once per process.
pub(crate) fn sweep_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(sweep_stale);
}

/// Removes the leftovers of test processes that are gone (see the module docs). Safe to run
/// concurrently with other test processes: it only touches what belongs to dead pids.
pub fn sweep_stale() {
    // 1. processes running from a dead owner's temp dir
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline);
            let owners = cmdline.split(['\0', '/', '=']).filter_map(dir_owner).collect::<Vec<_>>();
            if owners.iter().any(|&o| dead(o)) {
                kill_pid(pid);
            }
        }
    }
    // 2. network namespaces of dead owners
    if let Ok(entries) = std::fs::read_dir("/var/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if netns_owner(&name).is_some_and(dead) {
                delete_netns(&name);
            }
        }
    }
    // 3. temp dirs
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if dir_owner(&name).is_some_and(dead) {
                // A container runtime's overlay and netns mounts would keep it.
                crate::mounts::unmount_all_under(&e.path());
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    // 4. Docker plugin spec files (named by crate::plugin_name)
    if let Ok(entries) = std::fs::read_dir(crate::docker::PLUGIN_SPEC_DIR) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if dir_owner(&name).is_some_and(dead) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    // 5. subnet claims
    if let Ok(entries) = std::fs::read_dir(claims_dir()) {
        for e in entries.flatten() {
            let owner = std::fs::read_to_string(e.path()).ok().and_then(|s| s.trim().parse::<u32>().ok());
            if owner.is_some_and(dead) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Kills every process in netns `name`, then deletes it. Never panics.
pub(crate) fn delete_netns(name: &str) {
    if let Ok(pids) = run(Command::new(bin("ip")).args(["netns", "pids", name])) {
        for pid in pids.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
            if pid != std::process::id() {
                kill_pid(pid);
            }
        }
    }
    if Path::new("/var/run/netns").join(name).exists() {
        if let Err(e) = run(Command::new(bin("ip")).args(["netns", "delete", name])) {
            eprintln!("testbed: cannot delete netns {name}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_owners() {
        let n = netns_name("h-1");
        assert_eq!(netns_owner(&n), Some(std::process::id()));
        assert_eq!(netns_owner("lab-h1"), None);
        assert_eq!(netns_owner("tb123-4"), None);
        assert_eq!(dir_owner("tbfix-42-ovsdb-abc"), Some(42));
        assert_eq!(dir_owner("testbed-42"), None);
    }
}
