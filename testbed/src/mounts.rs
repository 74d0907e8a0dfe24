//! Mount points under a fixture's directory: container runtimes mount overlay filesystems and
//! bind-mount network namespaces there, and a directory with something mounted in it cannot be
//! removed.

use std::path::{Path, PathBuf};

/// The mount points at or under `dir` (from /proc/self/mountinfo), deepest first.
pub(crate) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        // mountinfo escapes spaces and the like as \040: the fixtures' paths have none.
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Lazily unmounts everything at or under `dir` (best effort, never panics).
pub(crate) fn unmount_all_under(dir: &Path) {
    for m in mounts_under(dir) {
        let _ = nix_free_umount(&m);
    }
}

/// `umount -l PATH` (the fixtures may shell out; the product may not).
fn nix_free_umount(path: &Path) -> std::io::Result<std::process::ExitStatus> {
    std::process::Command::new("umount")
        .arg("-l")
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
}
