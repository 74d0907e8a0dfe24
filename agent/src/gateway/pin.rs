//! Router namespaces pinned to files under the agent's own directory (`<state_dir>/netns`),
//! the way `ip netns add` pins them under /run/netns: a namespace made on a short-lived thread
//! (`unshare`), its `/proc/thread-self/ns/net` bind-mounted onto the file. The mount keeps it
//! alive without any process in it, across agent restarts and crashes, so its addresses, rules
//! and conntrack entries (the connections going through it) outlive the agent. A directory of
//! the agent's own, not /run/netns: several agents on one machine (one per test host) never
//! share a name.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};

/// Whether `path` is a pinned namespace (an nsfs mount), not just the file a pin was made on.
pub fn is_pinned(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// Pins a new network namespace at `path` unless one is pinned there already. Returns whether
/// it made one.
pub fn ensure(path: &Path) -> io::Result<bool> {
    if is_pinned(path) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // The file a pin is mounted on; one left by a pin gone at a reboot is reused.
    std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    let target = path.to_path_buf();
    // A thread of its own: unshare changes the namespace of the calling thread only, and this
    // one ends right after, so no thread the runtime uses ever changes namespace.
    std::thread::Builder::new()
        .name("netns-pin".into())
        .spawn(move || -> io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)?;
            mount(Some("/proc/thread-self/ns/net"), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
            Ok(())
        })?
        .join()
        .map_err(|_| io::Error::other("the netns pinning thread panicked"))??;
    Ok(true)
}

/// Unpins the namespace at `path` and removes the file. The namespace goes when nothing else
/// holds it (a process inside, an open file). Missing is fine.
pub fn remove(path: &Path) -> io::Result<()> {
    if is_pinned(path) {
        // Detached: a handle still open elsewhere in the agent must not make this fail.
        umount2(path, MntFlags::MNT_DETACH)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The files in `dir` (pinned or not), by name.
pub fn list(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str() {
            out.push((name.to_owned(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}
