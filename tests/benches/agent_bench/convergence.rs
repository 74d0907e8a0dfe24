//! Section "convergence": the first plug of a tenant on one host, until a container on
//! another host reaches it.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use overlay_tests::Cluster;
use testbed::{wait_until, Container};

use crate::procfs::rss_kib;
use crate::report::{f1, lat_row, ms, stats, Report, LAT_HEADER};

pub(crate) fn bench_convergence(r: &mut Report, hosts: u8, trials: usize) {
    let t_setup = Instant::now();
    let c = Cluster::start(hosts, &[]);
    let setup = t_setup.elapsed();
    let n = hosts as usize;
    let (mut conv, mut plug) = (Vec::new(), Vec::new());
    let vswitchd_rss: u64 = c.hosts.iter().filter_map(|h| h.vswitchd().pid()).map(|p| rss_kib(p).0).sum();
    for k in 0..trials {
        let tenant = format!("cv{k}");
        let vni = (7100 + k).to_string();
        c.agents[0].cli_ok(&["tenant", "create", &tenant, "--vni", &vni, "--cidr", "198.19.0.0/16"]);
        let (a, b) = (k % n, (k + 1) % n);
        for (h, agent) in c.agents.iter().enumerate() {
            if h != a {
                agent.cli_ok(&["tenant", "join", &tenant]);
            }
        }
        let cb = Container::new("cvb");
        let cbp = cb.path().display().to_string();
        c.agents[b].cli_ok(&["plug", &format!("cvb{k}"), "--tenant", &tenant, "--netns", &cbp]);
        // Retry ARP every 10 ms instead of every second, so ARP's timer does not quantise the
        // measurement.
        cb.run(&["sysctl", "-qw", "net.ipv4.neigh.eth0.retrans_time_ms=10"]);
        let target = "198.19.250.10";
        // A ping every 5 ms, each line stamped (-D), line-buffered so the first reply is read
        // as it comes (with -w or -c, ping gives up at the first ARP failure).
        let mut pinger = cb
            .command(&["timeout", "20", "stdbuf", "-oL", "ping", "-n", "-D", "-i", "0.005", target])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ping");
        // Timed from the plug on: ping must be trying already (its ARP request for the target
        // is pending).
        wait_until(Duration::from_secs(5), "ping to ask for the target's MAC", || {
            cb.ip_json(&["neigh", "show", target]).as_array().is_some_and(|n| !n.is_empty())
        });
        let ca = Container::new("cva");
        let cap = ca.path().display().to_string();
        let t0 = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        let t = Instant::now();
        c.agents[a].cli_ok(&["plug", &format!("cva{k}"), "--tenant", &tenant, "--netns", &cap, "--ip", target]);
        plug.push(ms(t.elapsed()));
        let stdout = pinger.stdout.take().expect("ping stdout");
        let mut seen = Vec::new();
        let reply = BufReader::new(stdout).lines().map_while(Result::ok).find_map(|l| {
            let stamp = l.contains("bytes from").then(|| l.strip_prefix('[')?.split(']').next()?.parse::<f64>().ok());
            seen.push(l);
            stamp.flatten()
        });
        let _ = pinger.kill();
        let _ = pinger.wait();
        let reply = reply.unwrap_or_else(|| {
            panic!("no reply from {target} within 20 s (trial {k}, {hosts} hosts):\n{}", seen.join("\n"))
        });
        conv.push((reply - t0) * 1e3);
        eprintln!("  {hosts} hosts, trial {k}: plug {:.0} ms, reachable after {:.0} ms", plug[k], conv[k]);
        c.agents[a].cli_ok(&["unplug", &format!("cva{k}")]);
        c.agents[b].cli_ok(&["unplug", &format!("cvb{k}")]);
    }
    let tunnels = c.agents[0].status()["tunnels"].as_array().map_or(0, Vec::len);
    let (s, p) = (stats(&conv), stats(&plug));
    r.table(
        &LAT_HEADER,
        &[
            lat_row(&format!("{hosts} hosts: plug start -> first ping reply from the other host"), "ms", &s),
            lat_row(&format!("{hosts} hosts: of which the plug command itself"), "ms", &p),
        ],
    );
    r.line(format!(
        "{hosts} hosts: p99 {} ms (target < 500 ms). Cluster set-up took {:.1} s; the {hosts} \
         ovs-vswitchd together held {} MiB RSS; at the end each host had {tunnels} tunnel ports \
         ({trials} tenants x {} peers).",
        f1(s.p99),
        setup.as_secs_f64(),
        vswitchd_rss / 1024,
        n - 1
    ));
    r.line("");
}
