//! Traffic and scrapes: an iperf3 server that is known to listen, the agent's metrics page.

use std::net::Ipv4Addr;
use std::process::{Child, Stdio};
use std::time::Duration;

use testbed::Netns;

/// A one-shot `iperf3 -s -1` in a namespace, listening by the time [`IperfServer::start`]
/// returns; killed on drop.
pub struct IperfServer {
    child: Child,
}

impl IperfServer {
    /// Starts the server on `port` in `ns` and waits (10 s at most) until the namespace has a
    /// TCP socket listening on that port. (A test connection would use up the one session
    /// `-1` allows, so the listening socket is looked up with `ss` instead.)
    #[track_caller]
    pub fn start(ns: &Netns, port: u16) -> Self {
        let child = ns
            .command(&["iperf3", "-s", "-1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 (apt-get install iperf3)");
        let server = IperfServer { child };
        let filter = format!("sport = :{port}");
        testbed::wait_until(Duration::from_secs(10), &format!("iperf3 to listen on :{port} in {}", ns.name()), || {
            let out = ns.exec(&["ss", "-H", "-l", "-t", "-n", &filter]);
            out.status.success() && !out.stdout.is_empty()
        });
        server
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `<address>:<port>` free on a loopback address of its own, for an agent's
/// `--metrics-address`.
pub fn metrics_address() -> String {
    let ip: Ipv4Addr = testbed::private_loopback_ip();
    format!("{ip}:{}", testbed::free_port_on(ip))
}

/// `GET /metrics` from `addr`: the whole HTTP answer, head and body.
pub fn get_metrics(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("sending the request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("reading the answer");
    answer
}
