//! A lab for the gateway tests: hosts on a fabric that routes to an "outside" network
//! (198.18.100.0/24, beyond every underlay and tenant range), agents running inside their host
//! namespaces as they would on real hosts, and etcd reachable over the fabric (so the addresses
//! the routers must keep containers from are real ones). Plus the small servers and clients
//! the tests talk with, run in-process inside a namespace.
//!
//! ```text
//!  root netns: etcd on 127.a.b.c:P (the testbed's), relayed to from the fabric
//!  fab   br0 198.18.X.254/24 (routes) + relay 198.18.X.254:Q -> etcd;  veth 198.18.100.254/24 (MTU 1400)
//!  out   eth0 198.18.100.1/24, default via .254: TCP and UDP servers
//!  hN    br-phy 198.18.X.N/24, default via .254; agent (nsenter --net) with --etcd-endpoints Q
//! ```

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use testbed::{Etcd, Fabric, Netns, TestHost, OUTSIDE_OCTET};

use crate::AgentProc;

/// The outside server's address.
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, OUTSIDE_OCTET, 1);
/// The MTU of the link to the outside network: smaller than the containers', so a too-big
/// reply (ICMP "fragmentation needed") has to find its way back to a container.
pub const OUTSIDE_MTU: u32 = 1400;

/// Runs `f` on a thread inside the namespace at `path`; sockets it opens stay there.
pub fn in_netns<T: Send + 'static>(path: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

/// A TCP and a UDP server answering each connection or datagram with `<tag> <source address
/// seen>`, bound inside a namespace; stopped on drop.
pub struct SourceServer {
    /// Where the TCP server listens.
    pub tcp: SocketAddrV4,
    /// Where the UDP server listens.
    pub udp: SocketAddrV4,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl SourceServer {
    /// Servers on `ip` (port 0: any free one) in the namespace at `netns`.
    pub fn start(netns: &Path, ip: Ipv4Addr, tcp_port: u16, udp_port: u16, tag: &str) -> SourceServer {
        let (listener, udp) = in_netns(netns, move || {
            (
                TcpListener::bind(SocketAddrV4::new(ip, tcp_port)).expect("binding the TCP server"),
                UdpSocket::bind(SocketAddrV4::new(ip, udp_port)).expect("binding the UDP server"),
            )
        });
        let addr = |a: SocketAddr| match a {
            SocketAddr::V4(v4) => v4,
            SocketAddr::V6(_) => unreachable!(),
        };
        let (tcp_addr, udp_addr) = (addr(listener.local_addr().unwrap()), addr(udp.local_addr().unwrap()));
        let stop = Arc::new(AtomicBool::new(false));
        let (t_stop, u_stop, t_tag, u_tag) = (stop.clone(), stop.clone(), tag.to_owned(), tag.to_owned());
        // Polled, not woken by a connection at drop: the address may be gone by then (an
        // unplugged container's).
        listener.set_nonblocking(true).unwrap();
        let tcp_thread = std::thread::spawn(move || {
            while !t_stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut c, peer)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = c.write_all(format!("{t_tag} {}", peer.ip()).as_bytes());
                        let _ = c.shutdown(Shutdown::Both);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        udp.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let udp_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !u_stop.load(Ordering::SeqCst) {
                if let Ok((_, peer)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(format!("{u_tag} {}", peer.ip()).as_bytes(), peer);
                }
            }
        });
        SourceServer { tcp: tcp_addr, udp: udp_addr, stop, threads: vec![tcp_thread, udp_thread] }
    }
}

impl Drop for SourceServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Connects from the namespace at `from` to `to` over TCP and returns what the server said.
pub fn tcp_ask(from: &Path, to: SocketAddrV4, timeout: Duration) -> std::io::Result<String> {
    in_netns(from, move || {
        let mut s = TcpStream::connect_timeout(&to.into(), timeout)?;
        s.set_read_timeout(Some(timeout))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}

/// Whether a TCP connection from the namespace at `from` to `to` opens within `timeout`.
pub fn tcp_connects(from: &Path, to: SocketAddrV4, timeout: Duration) -> bool {
    in_netns(from, move || TcpStream::connect_timeout(&to.into(), timeout).is_ok())
}

/// Sends a datagram from the namespace at `from` to `to` (three tries) and returns the answer.
pub fn udp_ask(from: &Path, to: SocketAddrV4, timeout: Duration) -> std::io::Result<String> {
    in_netns(from, move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(timeout / 3))?;
        let mut buf = [0u8; 512];
        let mut last = std::io::Error::other("no answer");
        for _ in 0..3 {
            s.send_to(b"who am i", to)?;
            match s.recv_from(&mut buf) {
                Ok((n, _)) => return Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) => last = e,
            }
        }
        Err(last)
    })
}

/// Relays TCP connections made to `listen` (in a namespace) to `target` (in the root
/// namespace): etcd, as the fabric sees it.
pub struct Relay {
    /// Where it listens.
    pub listen: SocketAddrV4,
    stop: Arc<AtomicBool>,
    netns: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// A relay listening on `ip` (a free port) in the namespace at `netns`.
    pub fn start(netns: &Path, ip: Ipv4Addr, target: SocketAddr) -> Relay {
        let listener = in_netns(netns, move || TcpListener::bind(SocketAddrV4::new(ip, 0)).expect("binding the relay"));
        let listen = match listener.local_addr().unwrap() {
            SocketAddr::V4(v4) => v4,
            SocketAddr::V6(_) => unreachable!(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        // Spawned from this (root namespace) thread: connections to etcd are made here.
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let (Ok(down), Ok(up)) = (conn, TcpStream::connect(target)) else { continue };
                for (mut from, mut to) in [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up.try_clone().unwrap(), down.try_clone().unwrap()),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
        });
        Relay { listen, stop, netns: netns.to_path_buf(), thread: Some(thread) }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let at = self.listen;
        in_netns(&self.netns, move || {
            let _ = TcpStream::connect_timeout(&at.into(), Duration::from_secs(1));
        });
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Hosts on a fabric routing to the outside network, one agent each (in its namespace), etcd
/// reachable over the fabric.
pub struct GatewayLab {
    // Drop order: agents, hosts, the outside, the relay, etcd, the fabric.
    /// The agents, one per host.
    pub agents: Vec<AgentProc>,
    /// The hosts.
    pub hosts: Vec<TestHost>,
    /// The outside network's namespace (198.18.100.1).
    pub outside: Netns,
    /// etcd as the agents reach it, over the fabric.
    pub relay: Relay,
    /// etcd.
    pub etcd: Etcd,
    /// The fabric.
    pub fabric: Fabric,
    /// The etcd prefix.
    pub prefix: String,
}

impl GatewayLab {
    /// `n` hosts with agents.
    pub fn start(n: u8) -> GatewayLab {
        testbed::require_binary("nsenter", "apt-get install util-linux");
        testbed::require_binary("nft", "apt-get install nftables");
        let etcd = Etcd::start();
        let fabric = Fabric::new();
        let fab = fabric.netns();
        let x = fabric.subnet_octet();
        let router = Ipv4Addr::new(198, 18, x, 254);
        fab.ip(&["addr", "add", &format!("{router}/24"), "dev", "br0"]);
        fab.run(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
        let outside = Netns::new("out");
        let out_end = testbed::unique_name("vo");
        fab.ip(&["link", "add", &out_end, "type", "veth", "peer", "name", "eth0", "netns", outside.name()]);
        let mtu = OUTSIDE_MTU.to_string();
        fab.ip(&["link", "set", &out_end, "mtu", &mtu, "up"]);
        fab.ip(&["addr", "add", &format!("198.18.{OUTSIDE_OCTET}.254/24"), "dev", &out_end]);
        outside.ip(&["link", "set", "eth0", "mtu", &mtu, "up"]);
        outside.ip(&["addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", "eth0"]);
        outside.ip(&["route", "add", "default", "via", &format!("198.18.{OUTSIDE_OCTET}.254")]);
        let target: SocketAddr = etcd.endpoint().trim_start_matches("http://").parse().expect("etcd's address");
        let relay = Relay::start(&fab.path(), router, target);
        let endpoint = format!("http://{}", relay.listen);
        let prefix = format!("/{}", testbed::unique_name("gw"));
        let hosts: Vec<TestHost> = (1..=n).map(|i| fabric.add_host(i)).collect();
        for h in &hosts {
            h.netns().ip(&["route", "add", "default", "via", &router.to_string()]);
        }
        let agents = hosts.iter().map(|h| AgentProc::start_in_netns(h, &endpoint, &prefix)).collect();
        GatewayLab { agents, hosts, outside, relay, etcd, fabric, prefix }
    }

    /// Adds host `index` with its agent (after the others: a host joining the cluster).
    pub fn add_host(&mut self, index: u8) {
        let h = self.fabric.add_host(index);
        let router = Ipv4Addr::new(198, 18, self.fabric.subnet_octet(), 254);
        h.netns().ip(&["route", "add", "default", "via", &router.to_string()]);
        let endpoint = format!("http://{}", self.relay.listen);
        self.agents.push(AgentProc::start_in_netns(&h, &endpoint, &self.prefix));
        self.hosts.push(h);
    }

    /// The agent's table in the router namespace of `vni` on host `i`, as nft lists it.
    pub fn router_table(&self, i: usize, vni: u32) -> String {
        let pin = self.agents[i].netns_dir().join(format!("gw-{vni}"));
        let out = Command::new("nsenter")
            .arg(format!("--net={}", pin.display()))
            .args(["nft", "list", "table", "ip", "overlay_agent"])
            .output()
            .expect("nsenter nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// etcd's address as the agents use it.
    pub fn etcd_address(&self) -> SocketAddrV4 {
        self.relay.listen
    }
}
