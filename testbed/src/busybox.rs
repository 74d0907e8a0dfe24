//! A container image without a registry: a root filesystem of the static busybox (one binary
//! plus a link per applet) as a tar, for `docker import` / `podman import`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::run;
use crate::require::require_binary;

const HINT: &str = "apt-get install busybox-static";

/// Writes `dir/busybox-rootfs.tar` and returns its path. Needs the statically linked busybox
/// (a dynamic one would need its libraries in the image).
#[track_caller]
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let busybox = require_binary("busybox", HINT);
    let status = std::fs::read_to_string("/var/lib/dpkg/status").unwrap_or_default();
    let installed = status
        .split("\n\n")
        .any(|p| p.starts_with("Package: busybox-static\n") && p.contains("Status: install ok installed"));
    assert!(installed, "testbed: the container image needs the static busybox: {HINT}");
    let root = dir.join("busybox-rootfs");
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap_or_else(|e| panic!("testbed: cannot create {}: {e}", bin.display()));
    std::fs::copy(&busybox, bin.join("busybox")).unwrap_or_else(|e| panic!("testbed: cannot copy busybox: {e}"));
    let applets = run(Command::new(&busybox).arg("--list-full")).unwrap_or_else(|e| panic!("testbed: {e}"));
    for applet in applets.lines().filter(|a| !a.is_empty()) {
        // The applet `busybox` itself would replace the binary by a link to itself.
        if Path::new(applet).file_name().is_some_and(|n| n == "busybox") {
            continue;
        }
        let link = root.join(applet);
        if let Some(parent) = link.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = std::os::unix::fs::symlink("/bin/busybox", &link);
    }
    for d in ["etc", "tmp", "proc", "sys", "dev", "root", "var/www"] {
        let _ = std::fs::create_dir_all(root.join(d));
    }
    let tar = dir.join("busybox-rootfs.tar");
    run(Command::new(require_binary("tar", "apt-get install tar")).arg("-C").arg(&root).arg("-cf").arg(&tar).arg("."))
        .unwrap_or_else(|e| panic!("testbed: {e}"));
    let _ = std::fs::remove_dir_all(&root);
    tar
}
