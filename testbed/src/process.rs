//! Child processes owned by fixtures, and running helper commands.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;

use tempfile::TempDir;

/// A command line, for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion; `Ok(stdout)` (trimmed) on success, `Err` with the command line,
/// status, stdout and stderr otherwise.
pub(crate) fn run(cmd: &mut Command) -> Result<String, String> {
    let out = output(cmd)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    } else {
        Err(format!(
            "`{}` failed ({}): stderr: {} stdout: {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

/// Runs `cmd` with stdin closed and output captured.
pub(crate) fn output(cmd: &mut Command) -> Result<Output, String> {
    cmd.stdin(Stdio::null()).output().map_err(|e| format!("cannot run `{}`: {e}", describe(cmd)))
}

/// Like [`run`], panicking on failure.
#[track_caller]
pub(crate) fn run_ok(cmd: &mut Command) -> String {
    run(cmd).unwrap_or_else(|e| panic!("testbed: {e}"))
}

/// `ip netns exec NAME program`, or just `program` when `netns` is `None`.
pub(crate) fn in_netns(netns: Option<&str>, program: &Path) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new(crate::require::bin("ip"));
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Last `n` lines of a file ("" if it can't be read).
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Sends SIGKILL to a process that is not our child (best effort).
pub(crate) fn kill_pid(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Sends `sig` (as `kill` takes it: `-STOP`, `-CONT`, `-TERM`...) to process `pid`; panics if
/// `kill` fails (e.g. no such process).
#[track_caller]
pub fn signal(pid: u32, sig: &str) {
    let out = output(Command::new("kill").args([sig, &pid.to_string()])).unwrap_or_else(|e| panic!("testbed: {e}"));
    assert!(out.status.success(), "testbed: kill {sig} {pid} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Whether a process with this pid exists (zombies included).
pub(crate) fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `ovs-appctl --timeout=10 -t <ctl> ARGS`; stdout or `Err` with stderr.
pub(crate) fn appctl(ctl: &Path, args: &[&str]) -> Result<String, String> {
    run(Command::new(crate::require::bin("ovs-appctl")).arg("--timeout=10").arg("-t").arg(ctl).args(args))
}

/// A daemon a fixture runs as its child (never `--detach`), with a temp dir of its own for its
/// files. The daemon fixtures ([`crate::OvsdbServer`], [`crate::Vswitchd`], [`crate::Etcd`])
/// deref to it. Drop kills the process, then removes the dir.
pub struct Process {
    pub(crate) daemon: Daemon,
    dir: TempDir,
}

impl Process {
    /// A process named `what` (in error messages) logging to `dir`.
    pub(crate) fn new(what: &str, dir: TempDir) -> Self {
        Process { daemon: Daemon::new(what, dir.path()), dir }
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.daemon.pid().is_some()
    }

    /// Pid, if running.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// SIGKILL (a crash: the process cleans nothing up); its files stay.
    pub fn kill(&self) {
        self.daemon.kill();
    }

    /// The temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Makes fixture `$t`, which keeps its [`Process`] in a field `process`, deref to it.
macro_rules! deref_to_process {
    ($t:ty) => {
        impl std::ops::Deref for $t {
            type Target = $crate::Process;
            fn deref(&self) -> &$crate::Process {
                &self.process
            }
        }
    };
}
pub(crate) use deref_to_process;

/// A child process a test started itself (a server with options no fixture offers, an agent
/// run by hand): killed and reaped on drop, also when the test panics.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// The process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A daemon run as a child process (never `--detach`), its stdout/stderr appended to files.
/// Killing it (SIGKILL) and reaping it is safe to call any number of times.
pub(crate) struct Daemon {
    what: String,
    stdout: PathBuf,
    stderr: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Daemon {
    /// A daemon named `what`, logging to `dir/<what>.stdout` and `dir/<what>.stderr`.
    pub(crate) fn new(what: &str, dir: &Path) -> Self {
        Daemon {
            what: what.to_string(),
            stdout: dir.join(format!("{what}.stdout")),
            stderr: dir.join(format!("{what}.stderr")),
            child: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn append(path: &Path) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| panic!("testbed: cannot open {}: {e}", path.display()))
    }

    /// Spawns `cmd`; kills a previous instance first.
    #[track_caller]
    pub(crate) fn spawn(&self, mut cmd: Command) {
        self.kill();
        cmd.stdin(Stdio::null()).stdout(Self::append(&self.stdout)).stderr(Self::append(&self.stderr));
        let child =
            cmd.spawn().unwrap_or_else(|e| panic!("testbed: cannot start {}: `{}`: {e}", self.what, describe(&cmd)));
        *self.lock() = Some(child);
    }

    /// Pid of the running process.
    pub(crate) fn pid(&self) -> Option<u32> {
        let mut g = self.lock();
        let child = g.as_mut()?;
        match child.try_wait() {
            Ok(None) => Some(child.id()),
            _ => None,
        }
    }

    /// `Some(description)` if the process was started and has exited.
    pub(crate) fn exited(&self) -> Option<String> {
        let mut g = self.lock();
        let child = g.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                Some(format!("{} exited ({status}); stderr tail:\n{}", self.what, tail(&self.stderr, 20)))
            }
            _ => None,
        }
    }

    /// SIGKILL and reap (no-op if not running).
    pub(crate) fn kill(&self) {
        if let Some(mut child) = self.lock().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `timeout` for the process to exit by itself; SIGKILL after that.
    pub(crate) fn wait_or_kill(&self, timeout: std::time::Duration) {
        let _ = crate::try_wait_for(timeout, "exit", || {
            let mut g = self.lock();
            match g.as_mut().map(|c| c.try_wait()) {
                None | Some(Ok(Some(_))) | Some(Err(_)) => Some(()),
                Some(Ok(None)) => None,
            }
        });
        self.kill();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}
