//! A private single-node etcd on a loopback address of its own (root network namespace).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use crate::process::{deref_to_process, run, tail, Process};
use crate::require::{bin, require_etcd};
use crate::sweep;
use crate::wait::try_wait_for;

/// How long etcd may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Fresh port pairs tried by [`Etcd::start`] when a port was taken in between.
const START_ATTEMPTS: usize = 5;
/// How long [`Etcd::start_again`] retries (e.g. while a port is still taken).
const RESTART_PATIENCE: Duration = Duration::from_secs(10);

/// A single-node etcd (`/usr/bin/etcd`), data dir in a temp dir, client and peer URLs on free
/// ports of a loopback address no other test uses ([`crate::private_loopback_ip`]), logs in
/// `<dir>/etcd.log`. Short raft timers (heartbeat 50 ms, election 500 ms) so it is ready fast.
///
/// [`Etcd::stop`] / [`Etcd::start_again`] give an outage on the same data and ports.
/// Drop kills it and removes the temp dir. Derefs to its [`Process`] (pid, temp dir with the
/// data dir and the log).
pub struct Etcd {
    process: Process,
    name: String,
    ip: Ipv4Addr,
    client_port: AtomicU16,
    peer_port: AtomicU16,
}

impl Etcd {
    /// Starts etcd and waits until `GET /health` says healthy.
    #[track_caller]
    pub fn start() -> Self {
        require_etcd();
        sweep::sweep_once();
        let etcd = Etcd {
            process: Process::new("etcd", sweep::temp_dir("etcd")),
            name: crate::unique_name("etcd"),
            ip: crate::private_loopback_ip(),
            client_port: AtomicU16::new(0),
            peer_port: AtomicU16::new(0),
        };
        let mut errors = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let (c, p) = two_free_ports(etcd.ip);
            etcd.client_port.store(c, Ordering::SeqCst);
            etcd.peer_port.store(p, Ordering::SeqCst);
            match etcd.launch() {
                Ok(()) => return etcd,
                Err(e) => errors.push(e),
            }
            // A failed first start may leave a half-made member dir behind.
            let _ = std::fs::remove_dir_all(etcd.data_dir());
        }
        panic!("testbed: etcd did not start: {}", errors.join("\n---\n"));
    }

    fn launch(&self) -> Result<(), String> {
        let client = self.endpoint();
        let peer = format!("http://{}:{}", self.ip, self.peer_port());
        let mut cmd = Command::new(bin("etcd"));
        cmd.args(["--name", &self.name])
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("{}={peer}", self.name)])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.name])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-outputs"])
            .arg(self.log_path());
        self.process.daemon.spawn(cmd);
        let what = format!("etcd at {client} to be healthy");
        try_wait_for(START_TIMEOUT, &what, || {
            if let Some(e) = self.process.daemon.exited() {
                return Some(Err(format!("{e}\nlog:\n{}", tail(&self.log_path(), 10))));
            }
            self.healthy().then_some(Ok(()))
        })
        .and_then(|r| r)
        .inspect_err(|_| self.kill())
    }

    /// Whether `GET /health` answers `"health":"true"`.
    pub fn healthy(&self) -> bool {
        http_get(SocketAddr::from((self.ip, self.client_port())), "/health")
            .is_some_and(|b| b.contains("\"health\":\"true\""))
    }

    /// SIGKILL (an outage or crash); data dir and ports are kept.
    pub fn stop(&self) {
        self.kill();
    }

    /// Starts etcd again on the same data dir and ports (retrying while a port is still taken);
    /// waits until healthy.
    #[track_caller]
    pub fn start_again(&self) {
        self.kill();
        let start = std::time::Instant::now();
        loop {
            match self.launch() {
                Ok(()) => return,
                Err(e) if start.elapsed() > RESTART_PATIENCE => {
                    panic!("testbed: etcd did not start again within {RESTART_PATIENCE:?}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// `http://<its loopback address>:<client port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.ip, self.client_port())
    }

    /// Client port.
    pub fn client_port(&self) -> u16 {
        self.client_port.load(Ordering::SeqCst)
    }

    /// Peer port.
    pub fn peer_port(&self) -> u16 {
        self.peer_port.load(Ordering::SeqCst)
    }

    /// The member name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// The etcd log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("etcd.log")
    }

    /// `ETCDCTL_API=3 etcdctl --endpoints=<endpoint> ARGS`; stdout or `Err` with stderr.
    pub fn try_etcdctl(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new(bin("etcdctl"))
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
            .arg("--dial-timeout=2s")
            .arg("--command-timeout=5s")
            .args(args))
    }

    /// Like [`Etcd::try_etcdctl`], panicking on failure.
    #[track_caller]
    pub fn etcdctl(&self, args: &[&str]) -> String {
        self.try_etcdctl(args).unwrap_or_else(|e| panic!("testbed: {e}"))
    }
}

deref_to_process!(Etcd);

/// Two distinct ports of `ip` that were free a moment ago (bound with port 0, then released).
fn two_free_ports(ip: Ipv4Addr) -> (u16, u16) {
    let bind = || TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("testbed: cannot bind {ip}:0: {e}"));
    let (a, b) = (bind(), bind());
    let port = |l: &TcpListener| l.local_addr().map(|a| a.port()).unwrap_or(0);
    (port(&a), port(&b))
}

/// A minimal HTTP/1.0 GET; the response body if the status is 200.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", addr.ip()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_string())
}
