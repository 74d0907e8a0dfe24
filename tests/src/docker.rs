//! Docker on a test host: its own dockerd in the host's namespace ([`testbed::Dockerd`]), the
//! busybox image, and the `overlay-agent docker-plugin` process talking to the host's agent.

use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::time::Duration;

use serde_json::Value;
use testbed::Dockerd;

use crate::agent::spawn_logged;
use crate::{agent_binary, AgentProc, Cluster};

/// The Docker plugin of one host: `overlay-agent --api-socket A docker-plugin`, serving a
/// socket in dockerd's directory, registered with a spec file under a name unique to the test.
pub struct DockerPlugin {
    child: Option<Child>,
    args: Vec<String>,
    logs: PathBuf,
    starts: u32,
    /// The driver name networks are created with (`-d NAME --ipam-driver NAME`).
    pub name: String,
}

impl DockerPlugin {
    /// Starts the plugin for `agent` and `dockerd` and waits for its socket.
    pub fn start(agent: &AgentProc, dockerd: &Dockerd) -> Self {
        let name = testbed::plugin_name("ovp");
        let socket = dockerd.dir().join("plugin.sock");
        let args = vec![
            "--api-socket".into(),
            agent.api_socket().display().to_string(),
            "docker-plugin".into(),
            "--socket".into(),
            socket.display().to_string(),
            "--name".into(),
            name.clone(),
            "--docker-host".into(),
            dockerd.host(),
            "--log-level".into(),
            "info,overlay_docker_plugin=debug".into(),
            // Quick, so a test sees labels and lost endpoints settle within seconds.
            "--reconcile-interval".into(),
            "1".into(),
        ];
        dockerd.add_plugin_spec(&name, &socket);
        let mut p = DockerPlugin { child: None, args, logs: dockerd.dir().join("plugin"), starts: 0, name };
        p.spawn();
        p
    }

    fn socket(&self) -> PathBuf {
        PathBuf::from(&self.args[4])
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let mut cmd = Command::new(agent_binary());
        cmd.args(&self.args).env_remove("DOCKER_HOST");
        let log = self.logs.with_extension(format!("{}.log", self.starts));
        self.child = Some(spawn_logged(&mut cmd, &log, "overlay-agent docker-plugin"));
        let socket = self.socket();
        testbed::wait_until(Duration::from_secs(10), "the Docker plugin's socket", || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
    }

    /// Everything the plugin logged, all runs.
    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.logs.with_extension(format!("{n}.log"))).unwrap_or_default())
            .collect()
    }

    /// The plugin's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL (a crash): its socket stays, as a crashed plugin's does.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again after [`DockerPlugin::kill`] (Docker does not activate it again).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill the plugin first");
        self.spawn();
    }
}

impl Drop for DockerPlugin {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_ref() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        }
        if let Some(mut c) = self.child.take() {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while c.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Docker on host `i` of a cluster. Drop removes its containers and networks while the plugin
/// and agent still run, then stops the plugin and dockerd.
pub struct DockerHost {
    /// The plugin.
    pub plugin: DockerPlugin,
    /// dockerd.
    pub dockerd: Dockerd,
    /// The busybox image.
    pub image: &'static str,
}

impl DockerHost {
    /// dockerd in host `i`'s namespace, the image, and the plugin for its agent.
    pub fn start(c: &Cluster, i: usize) -> Self {
        let dockerd = Dockerd::start(c.hosts[i].netns());
        let image = dockerd.import_busybox();
        let plugin = DockerPlugin::start(&c.agents[i], &dockerd);
        DockerHost { plugin, dockerd, image }
    }

    /// `docker ARGS`, whatever the outcome.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.dockerd.docker(args)
    }

    /// `docker ARGS`, which must succeed; stdout. A failure shows the plugin's log.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}\n--- plugin log (end) ---\n{}\n--- dockerd log (end) ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            tail(&self.plugin.logs(), 30),
            self.dockerd.log_tail(20)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `docker ARGS`, which must fail; stderr.
    #[track_caller]
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(!out.status.success(), "docker {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Creates network `name` for `tenant` with this host's plugin; `ipam_opts` like
    /// `["vni=4101"]`, `extra` like `["--subnet", "198.19.0.0/17"]`.
    #[track_caller]
    pub fn network(&self, name: &str, tenant: &str, ipam_opts: &[&str], extra: &[&str]) -> String {
        let p = self.plugin.name.as_str();
        let tenant_opt = format!("tenant={tenant}");
        let mut args = vec!["network", "create", "-d", p, "--ipam-driver", p, "--ipam-opt", tenant_opt.as_str()];
        for o in ipam_opts {
            args.extend(["--ipam-opt", o]);
        }
        args.extend_from_slice(extra);
        args.push(name);
        self.ok(&args)
    }

    /// `docker run -d --name NAME --network NETWORK EXTRA IMAGE sleep 3600`; the container id.
    #[track_caller]
    pub fn run(&self, name: &str, network: &str, extra: &[&str]) -> String {
        let mut args = vec!["run", "-d", "--name", name, "--network", network];
        args.extend_from_slice(extra);
        args.extend([self.image, "sleep", "3600"]);
        self.ok(&args)
    }

    /// `docker inspect` of a container.
    #[track_caller]
    pub fn inspect(&self, container: &str) -> Value {
        let out = self.ok(&["inspect", container]);
        let v: Value = serde_json::from_str(&out).expect("docker inspect JSON");
        v[0].clone()
    }

    /// A container's settings on network `network` (IPAddress, MacAddress, EndpointID, ...).
    #[track_caller]
    pub fn on_network(&self, container: &str, network: &str) -> Value {
        let v = self.inspect(container);
        let n = v["NetworkSettings"]["Networks"][network].clone();
        assert!(n.is_object(), "{container} is not on {network}: {}", v["NetworkSettings"]["Networks"]);
        n
    }

    /// The container's address on `network`.
    #[track_caller]
    pub fn ip(&self, container: &str, network: &str) -> String {
        self.on_network(container, network)["IPAddress"].as_str().expect("IPAddress").to_owned()
    }

    /// Whether `container` gets an answer to one ping of `ip` within `secs` seconds.
    pub fn pings(&self, container: &str, ip: &str, secs: u32) -> bool {
        let w = secs.to_string();
        self.docker(&["exec", container, "ping", "-c", "1", "-W", &w, ip]).status.success()
    }

    /// Waits (20 s at most) until `container` reaches `ip`.
    #[track_caller]
    pub fn wait_ping(&self, container: &str, ip: &str) {
        testbed::wait_until(Duration::from_secs(20), &format!("{container} to reach {ip}"), || {
            self.pings(container, ip, 1)
        });
    }
}

impl Drop for DockerHost {
    fn drop(&mut self) {
        self.dockerd.remove_all_containers();
        self.dockerd.remove_all_networks();
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
