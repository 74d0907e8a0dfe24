//! What the gateway costs: egress TCP throughput (a container to a server beyond the fabric,
//! through both translations) against the overlay's own east-west figure (a container to one
//! on another host, through the tunnel), and how many connections per second can be set up
//! through SNAT (each a new conntrack entry in the router and in the host namespace).
//!
//! `cargo bench -p overlay-tests --bench gateway_bench` (root; needs the agent binary:
//! `cargo build -p overlay-agent`). Settings: GATEWAY_BENCH_SECONDS (iperf3 duration, 5),
//! GATEWAY_BENCH_CONNECTIONS (connections timed, 1000).

use std::net::{SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use overlay_tests::gateway::{in_netns, tcp_ask, GatewayLab, SourceServer, OUTSIDE_IP};
use overlay_tests::{plug, IperfServer};
use serde_json::Value;
use testbed::Container;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// iperf3 from `from` to `to` for `secs`: received bits per second.
fn iperf(from: &Container, to: &str, port: u16, secs: u64) -> f64 {
    let out = from.exec(&["iperf3", "-c", to, "-p", &port.to_string(), "-t", &secs.to_string(), "-J"]);
    let j: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 -J output ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    j["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or_else(|| panic!("no throughput in {j}"))
}

fn main() {
    testbed::require_binary("iperf3", "apt-get install iperf3");
    let secs = env("GATEWAY_BENCH_SECONDS", 5);
    let connections = env("GATEWAY_BENCH_CONNECTIONS", 1000);
    let lab = GatewayLab::start(2);
    lab.agents[0].cli_ok(&["tenant", "create", "red", "--vni", "4900", "--cidr", "198.19.0.0/16"]);
    let (c1, c2) = (Container::new("gb"), Container::new("gb"));
    plug(&lab.agents[0], "c1", "red", &c1, &[]);
    let ip2 = plug(&lab.agents[1], "c2", "red", &c2, &[])["ip"].as_str().unwrap().to_owned();
    let server = SourceServer::start(&lab.outside.path(), OUTSIDE_IP, 0, 0, "outside");
    let deadline = Instant::now() + Duration::from_secs(30);
    while tcp_ask(&c1.path(), server.tcp, Duration::from_secs(1)).is_err() {
        assert!(Instant::now() < deadline, "no egress within 30 s");
    }
    testbed::wait_ping(&c1, &ip2, Duration::from_secs(30));

    let egress = {
        let _s = IperfServer::start(&lab.outside, 5301);
        iperf(&c1, &OUTSIDE_IP.to_string(), 5301, secs)
    };
    let east_west = {
        let _s = IperfServer::start(&c2, 5302);
        iperf(&c1, &ip2, 5302, secs)
    };
    println!("egress TCP (container -> outside, SNAT twice): {:.0} Mbit/s", egress / 1e6);
    println!("east-west TCP (container -> container on another host): {:.0} Mbit/s", east_west / 1e6);
    println!("egress / east-west: {:.2}", egress / east_west);

    // Connection setup through SNAT: connect, read the server's line, close; one after the other.
    let to: SocketAddrV4 = server.tcp;
    let (n, took) = in_netns(&c1.path(), move || {
        let start = Instant::now();
        let mut ok = 0u64;
        for _ in 0..connections {
            if let Ok(mut s) = TcpStream::connect_timeout(&to.into(), Duration::from_secs(2)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = String::new();
                if std::io::Read::read_to_string(&mut s, &mut buf).is_ok() && !buf.is_empty() {
                    ok += 1;
                }
            }
        }
        (ok, start.elapsed())
    });
    assert_eq!(n, connections, "every connection through SNAT completed");
    println!(
        "SNAT connection setup: {n} connections in {:.2} s: {:.0} connections/s (sequential, each a new conntrack entry in the router and the host)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}
