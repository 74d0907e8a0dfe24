//! [`AgentProc`]: the real `overlay-agent` binary run as a child process, its CLI, its logs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::{Container, Etcd, TestHost};

/// How long an agent may take to answer its API after a start.
const READY_WITHIN: Duration = Duration::from_secs(20);
/// The same for an agent run inside its host's namespace, which builds the gateway's router
/// namespaces as it starts.
const READY_IN_NETNS_WITHIN: Duration = Duration::from_secs(30);

/// The `overlay-agent` binary built by cargo for this workspace.
pub fn agent_binary() -> PathBuf {
    // Integration tests and benchmarks run from target/<profile>/deps; the binary is one level up.
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("overlay-agent");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p overlay-agent` (make test does)",
        bin.display()
    );
    bin
}

/// A binary of this workspace built by cargo (`overlay-cni`, ...), from the directory the
/// test binaries run from.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --workspace --bins` (make test does)",
        bin.display()
    );
    bin
}

/// Plugs container `c` into `tenant` through `agent` (by its namespace file, with `extra`
/// flags); returns the plug's JSON answer.
pub fn plug(agent: &AgentProc, id: &str, tenant: &str, c: &Container, extra: &[&str]) -> Value {
    let path = c.path().display().to_string();
    let mut args = vec!["plug", id, "--tenant", tenant, "--netns", path.as_str()];
    args.extend_from_slice(extra);
    serde_json::from_str(&agent.cli_ok(&args)).expect("plug prints JSON")
}

/// The address a plug answered with.
pub fn ip_of(plugged: &Value) -> String {
    plugged["ip"].as_str().expect("plug result has an ip").to_owned()
}

/// A running agent for one test host.
pub struct AgentProc {
    child: Option<Child>,
    dir: tempfile::TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The network namespace the agent process runs in (`nsenter --net`); `None`: the test's.
    netns: Option<PathBuf>,
    /// How long a start may take until the agent is registered.
    ready_within: Duration,
    /// The hostname it registers.
    pub hostname: String,
    starts: u32,
}

impl AgentProc {
    /// Arguments of `overlay-agent run` for `host` (before `extra`).
    pub fn run_args(host: &TestHost, etcd: &Etcd, prefix: &str, api_socket: &Path) -> Vec<String> {
        Self::run_args_for(host, &etcd.endpoint(), prefix, api_socket)
    }

    /// [`AgentProc::run_args`] for any etcd endpoint (e.g. https).
    pub fn run_args_for(host: &TestHost, etcd_endpoint: &str, prefix: &str, api_socket: &Path) -> Vec<String> {
        vec![
            "run".into(),
            "--hostname".into(),
            host.name().into(),
            "--underlay-ip".into(),
            host.underlay_ip().to_string(),
            "--etcd-endpoints".into(),
            etcd_endpoint.to_owned(),
            "--etcd-prefix".into(),
            prefix.into(),
            "--ovsdb".into(),
            host.ovsdb_remote(),
            "--datapath-type".into(),
            "netdev".into(),
            "--ovs-rundir".into(),
            host.vswitchd().rundir().display().to_string(),
            "--host-netns".into(),
            host.netns().path().display().to_string(),
            "--api-socket".into(),
            api_socket.display().to_string(),
            // The machine identity lives here: the same for every start of this agent, its own.
            "--state-dir".into(),
            api_socket.parent().expect("the API socket is in the agent's dir").join("state").display().to_string(),
            "--liveness-ttl".into(),
            "2".into(),
            "--log-level".into(),
            "info,overlay_agent=debug".into(),
        ]
    }

    /// Starts the agent and waits until its API answers.
    pub fn start(host: &TestHost, etcd: &Etcd, prefix: &str, extra: &[&str]) -> Self {
        Self::start_with(host, &etcd.endpoint(), prefix, extra)
    }

    /// [`AgentProc::start`] against any etcd endpoint.
    pub fn start_with(host: &TestHost, etcd_endpoint: &str, prefix: &str, extra: &[&str]) -> Self {
        let mut a = Self::spawn_with(host, etcd_endpoint, prefix, &[], extra);
        a.wait_ready();
        a
    }

    /// Starts an agent for `host` with some flags of [`AgentProc::run_args`] changed
    /// (`overrides`, e.g. `("--hostname", "h1")`) and `extra` ones added, without waiting.
    pub fn spawn_with(
        host: &TestHost,
        etcd_endpoint: &str,
        prefix: &str,
        overrides: &[(&str, &str)],
        extra: &[&str],
    ) -> Self {
        let dir = tempfile::Builder::new().prefix("agent-").tempdir().expect("tempdir");
        let args = Self::run_args_for(host, etcd_endpoint, prefix, &dir.path().join("api.sock"));
        let mut a = Self::in_dir(dir, host.name(), args, Vec::new());
        for (flag, value) in overrides {
            a.set_arg(flag, value);
            if *flag == "--hostname" {
                a.hostname = (*value).to_owned();
            }
        }
        a.args.extend(extra.iter().map(|s| s.to_string()));
        a.spawn();
        a
    }

    /// Starts the agent of `host` inside the host's namespace (`nsenter --net`, which keeps the
    /// mount namespace: the router namespaces it pins outlive it, as on a real host) and waits
    /// until it is registered.
    pub fn start_in_netns(host: &TestHost, etcd_endpoint: &str, prefix: &str) -> Self {
        testbed::require_binary("nsenter", "apt-get install util-linux");
        let dir = tempfile::Builder::new().prefix("agent-").tempdir().expect("tempdir");
        let args = Self::run_args_for(host, etcd_endpoint, prefix, &dir.path().join("api.sock"));
        let mut a = Self::in_dir(dir, host.name(), args, Vec::new());
        a.netns = Some(host.netns().path());
        a.ready_within = READY_IN_NETNS_WITHIN;
        a.spawn();
        a.wait_ready();
        a
    }

    /// An agent run with exactly `args` (e.g. `run --hostname ...`), not tied to a
    /// [`TestHost`], with `env` added to its environment; not started: [`AgentProc::launch`] it.
    /// The API socket, the state dir (the machine identity) and an empty config file are added,
    /// all in the agent's own temp dir.
    pub fn from_args(hostname: &str, args: Vec<String>, env: Vec<(String, String)>) -> Self {
        let dir = tempfile::Builder::new().prefix("agent-").tempdir().expect("tempdir");
        let mut a = Self::in_dir(dir, hostname, args, env);
        let socket = a.api_socket().display().to_string();
        a.set_arg("--api-socket", &socket);
        let state = a.dir.path().join("state").display().to_string();
        a.set_arg("--state-dir", &state);
        a
    }

    fn in_dir(dir: tempfile::TempDir, hostname: &str, args: Vec<String>, env: Vec<(String, String)>) -> Self {
        let mut a = AgentProc {
            child: None,
            dir,
            args,
            env,
            netns: None,
            ready_within: READY_WITHIN,
            hostname: hostname.to_owned(),
            starts: 0,
        };
        // An empty config file: every key comes from the flags, never from a file that may
        // exist on the machine running the tests.
        let config = a.dir.path().join("agent.toml");
        std::fs::write(&config, "").expect("config file");
        a.set_arg("--config", &config.display().to_string());
        a
    }

    /// Waits until the agent says it does not hold its hostname; returns why (status's
    /// `identity_conflict`).
    pub fn wait_refused(&mut self) -> String {
        self.wait_answering(|s| s["host"]["identity_conflict"].is_string(), "refused");
        self.status()["host"]["identity_conflict"].as_str().expect("conflict").to_owned()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "stop or kill the agent first");
        self.starts += 1;
        let mut cmd = match &self.netns {
            Some(netns) => {
                let mut cmd = Command::new("nsenter");
                cmd.arg(format!("--net={}", netns.display())).arg(agent_binary());
                cmd
            }
            None => Command::new(agent_binary()),
        };
        cmd.args(&self.args).env_remove("OVERLAY_API_SOCKET").envs(self.env.iter().map(|(k, v)| (k, v)));
        self.child = Some(spawn_logged(&mut cmd, &self.log_path_n(self.starts), "overlay-agent"));
    }

    fn log_path_n(&self, n: u32) -> PathBuf {
        self.dir.path().join(format!("agent-{n}.log"))
    }

    /// Everything the agent logged, all runs.
    pub fn logs(&self) -> String {
        (1..=self.starts).map(|n| std::fs::read_to_string(self.log_path_n(n)).unwrap_or_default()).collect()
    }

    /// The last `n` lines the agent logged.
    pub fn log_tail(&self, n: usize) -> String {
        let logs = self.logs();
        let lines: Vec<&str> = logs.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The API socket.
    pub fn api_socket(&self) -> PathBuf {
        self.dir.path().join("api.sock")
    }

    /// Where the agent pins its router namespaces.
    pub fn netns_dir(&self) -> PathBuf {
        self.dir.path().join("state").join("netns")
    }

    /// The pinned router namespace files, by name.
    pub fn pinned(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.netns_dir())
            .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Waits until the agent is registered (or the process died: then panics with its log).
    pub fn wait_ready(&mut self) {
        self.wait_answering(|s| s["host"]["registered"] == true, "registered");
    }

    /// Waits until `status` answers and `ready` holds for it (or the process died: then panics
    /// with its log).
    pub fn wait_answering(&mut self, ready: impl Fn(&Value) -> bool, what: &str) {
        self.wait_answering_within(self.ready_within, ready, what);
    }

    /// [`AgentProc::wait_answering`] with a deadline of the caller's.
    pub fn wait_answering_within(&mut self, deadline: Duration, ready: impl Fn(&Value) -> bool, what: &str) {
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("overlay-agent for {} exited with {status}:\n{}", self.hostname, self.logs());
            }
            if self.api_socket().exists() {
                let out = self.cli(&["status", "--json"]);
                let status: Option<Value> =
                    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten();
                if status.is_some_and(|s| ready(&s)) {
                    return;
                }
            }
            assert!(Instant::now() < until, "agent {} not {what} within {deadline:?}:\n{}", self.hostname, self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `overlay-agent --api-socket <this agent's> ARGS`.
    fn cli_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(agent_binary());
        cmd.arg("--api-socket").arg(self.api_socket()).args(args);
        cmd
    }

    /// Runs an `overlay-agent` CLI command against this agent.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_command(args).output().expect("running the overlay-agent CLI")
    }

    /// Starts `overlay-agent ARGS` against this agent without waiting for it (output dropped).
    pub fn spawn_cli(&self, args: &[&str]) -> Child {
        self.cli_command(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("overlay-agent CLI")
    }

    /// Runs a CLI command that must succeed; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "overlay-agent {args:?} failed: {}\n--- agent log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `status --json`.
    pub fn status(&self) -> Value {
        serde_json::from_str(&self.cli_ok(&["status", "--json"])).expect("status JSON")
    }

    /// SIGTERM and wait for exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Pid of the running agent process, if it runs (e.g. to SIGSTOP it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Changes the value of `flag` (e.g. `--underlay-ip`) for the next [`AgentProc::restart`],
    /// adding the flag if it was not given.
    pub fn set_arg(&mut self, flag: &str, value: &str) {
        match self.args.iter().position(|a| a == flag) {
            Some(i) => self.args[i + 1] = value.to_owned(),
            None => self.args.extend([flag.to_owned(), value.to_owned()]),
        }
    }

    /// Leaves `flag` and its value out of the next start.
    pub fn remove_arg(&mut self, flag: &str) {
        if let Some(i) = self.args.iter().position(|a| a == flag) {
            self.args.drain(i..i + 2);
        }
    }

    /// SIGKILL (a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the same agent again (after stop or kill) and waits until it is registered.
    pub fn restart(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    /// Starts the agent (again) and waits up to `deadline` until its API answers, registered
    /// or not.
    pub fn launch(&mut self, deadline: Duration) {
        self.spawn();
        self.wait_answering_within(deadline, |_| true, "answering");
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill();
        unpin_all(&self.netns_dir());
    }
}

/// Unmounts the router namespaces an agent pinned in `dir`: they outlive agents by design,
/// and a test's go with it.
fn unpin_all(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let _ = Command::new("umount").arg("-l").arg(e.path()).stderr(Stdio::null()).status();
    }
}

/// Starts `cmd` (what: its name for the panic) with no stdin and its stdout and stderr in a
/// new file at `log`.
pub(crate) fn spawn_logged(cmd: &mut Command, log: &Path, what: &str) -> Child {
    let log = std::fs::File::create(log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {what}: {e}"))
}

/// Waits for a CLI process started with [`AgentProc::spawn_cli`] to exit (10 s at most).
#[track_caller]
pub fn wait_child(mut child: Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("try_wait").is_none() {
        assert!(Instant::now() < deadline, "the CLI did not exit within 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}
