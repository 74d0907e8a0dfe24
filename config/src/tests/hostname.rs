//! The machine's hostname: the kernel's, else `/etc/hostname`, else none.
//!
//! The fallbacks are seen from a private mount namespace (`unshare --mount`, root only) in which
//! the kernel's hostname file is hidden or reads empty and `/etc/hostname` is a file of the
//! test's: the test binary runs [`system_hostname_as_seen_here`] there and prints the answer.

use std::process::Command;

use super::*;

/// The kernel's hostname file.
const KERNEL_HOSTNAME: &str = "/proc/sys/kernel/hostname";

#[test]
fn system_hostname_is_the_kernels() {
    assert!(
        Path::new(KERNEL_HOSTNAME).exists(),
        "{KERNEL_HOSTNAME} is missing: this test needs procfs mounted on /proc (mount -t proc proc /proc)"
    );
    let out = Command::new("uname").arg("-n").output().expect("uname (coreutils)");
    let nodename = String::from_utf8(out.stdout).expect("uname -n prints UTF-8").trim().to_owned();
    assert!(!nodename.is_empty(), "uname -n printed nothing");
    assert_eq!(system_hostname(), Some(nodename));
}

/// What the kernel's hostname file is in the private mount namespace.
#[derive(Debug, Clone, Copy)]
enum Kernel {
    /// Hidden (an empty tmpfs over `/proc/sys/kernel`): the file does not exist.
    Hidden,
    /// An empty file bound over it.
    Empty,
}

/// `system_hostname()` in a private mount namespace where the kernel's hostname file is as
/// `kernel` says and `/etc/hostname` holds `etc`.
fn system_hostname_with(kernel: Kernel, etc: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (empty, etc_file) = (dir.path().join("empty"), dir.path().join("hostname"));
    std::fs::write(&empty, "").unwrap();
    std::fs::write(&etc_file, etc).unwrap();
    let hide = match kernel {
        Kernel::Hidden => "mount -t tmpfs none /proc/sys/kernel",
        Kernel::Empty => "mount --bind \"$1\" /proc/sys/kernel/hostname",
    };
    let script = format!(
        "{hide} && mount --bind \"$2\" /etc/hostname && \
         exec \"$3\" --exact tests::hostname::system_hostname_as_seen_here --ignored --nocapture --test-threads 1"
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script, "sh"])
        .arg(&empty)
        .arg(&etc_file)
        .arg(std::env::current_exe().unwrap())
        .output()
        .expect("unshare (util-linux)");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the test binary in a private mount namespace failed (this test needs root: unshare --mount, \
         mount --bind): {stderr}\n{stdout}"
    );
    // libtest prints the test's name and its output on one line.
    stdout
        .lines()
        .find_map(|l| l.split_once("system_hostname() = ").map(|(_, answer)| answer))
        .unwrap_or_else(|| panic!("no answer from the test binary:\n{stdout}"))
        .to_owned()
}

#[test]
fn system_hostname_falls_back_to_etc_hostname_then_to_none() {
    assert_eq!(system_hostname_with(Kernel::Hidden, "from-etc\n"), r#"Some("from-etc")"#);
    assert_eq!(system_hostname_with(Kernel::Empty, "  from-etc  \n"), r#"Some("from-etc")"#);
    assert_eq!(system_hostname_with(Kernel::Hidden, ""), "None");
    assert_eq!(system_hostname_with(Kernel::Empty, " \n"), "None");
}

/// Run by [`system_hostname_falls_back_to_etc_hostname_then_to_none`] inside its mount
/// namespace; on its own it only prints the machine's answer.
#[test]
#[ignore = "run by system_hostname_falls_back_to_etc_hostname_then_to_none in a private mount namespace"]
fn system_hostname_as_seen_here() {
    println!("system_hostname() = {:?}", system_hostname());
}
