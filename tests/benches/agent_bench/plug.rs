//! Section "plug", plug latency: `overlay-agent plug` against the nova-docker shell recipe, and
//! where each one's time goes.

use std::time::{Duration, Instant};

use overlay_tests::Cluster;
use testbed::{wait_ping, Container, TestHost};

use crate::procfs::main_thread_cpu_ns;
use crate::report::{env_num, f1, lat_row, ms, ok_json, run, stats, Report, LAT_HEADER};

/// The nova-docker recipe (shared/seeds/000_*.txt) for container `i`, one process per step as
/// nova-docker runs them: veth pair, `ovs-vsctl add-port` with the Interface external_ids
/// (waiting for ovs-vswitchd, as without `--no-wait`), host end up, the other end into the
/// container, then `ip netns exec` for MAC/MTU/name, address, up, default route, and TX checksum
/// off (needed on the netdev datapath; the agent does the same).
fn nova_docker_plug(host: &TestHost, c: &Container, i: usize) -> Vec<(String, f64)> {
    let h = host.netns().name();
    let cn = c.name();
    let (hv, cv) = (format!("nvh{i}"), format!("nvc{i}"));
    let mac = format!("02:00:00:00:{:02x}:{:02x}", i >> 8, i & 0xff);
    let ip = format!("198.19.{}.{}/17", 129 + i / 250, 1 + i % 250);
    let id = format!("nova-{i}");
    let db = format!("--db={}", host.ovsdb_remote());
    let mut steps = Vec::with_capacity(9);
    step(&mut steps, "link add", &["ip", "-n", h, "link", "add", "name", &hv, "type", "veth", "peer", "name", &cv]);
    step(
        &mut steps,
        "ovs-vsctl",
        &[
            "ovs-vsctl",
            "--timeout=10",
            &db,
            "--",
            "--if-exists",
            "del-port",
            &hv,
            "--",
            "add-port",
            "br-int",
            &hv,
            "tag=4000",
            "--",
            "set",
            "Interface",
            &hv,
            &format!("external-ids:iface-id={id}"),
            "external-ids:iface-status=active",
            &format!("external-ids:attached-mac={mac}"),
            &format!("external-ids:vm-uuid={id}"),
        ],
    );
    // An experiment, not the seed's recipe: both ends without IPv6, as the agent makes its own.
    let ipv6_off = std::env::var_os("BENCH_SHELL_IPV6_OFF").is_some();
    let no_ipv6 = |dev: &str| format!("net.ipv6.conf.{dev}.disable_ipv6=1");
    if ipv6_off {
        step(&mut steps, "ipv6 off", &["ip", "netns", "exec", h, "sysctl", "-qw", &no_ipv6(&hv)]);
    }
    step(&mut steps, "host end up", &["ip", "-n", h, "link", "set", &hv, "up"]);
    step(&mut steps, "to netns", &["ip", "-n", h, "link", "set", &cv, "netns", cn]);
    if ipv6_off {
        step(&mut steps, "ipv6 off (container)", &["ip", "netns", "exec", cn, "sysctl", "-qw", &no_ipv6(&cv)]);
    }
    step(
        &mut steps,
        "name/mac/mtu",
        &["ip", "netns", "exec", cn, "ip", "link", "set", &cv, "name", "eth0", "address", &mac, "mtu", "1450"],
    );
    step(&mut steps, "addr", &["ip", "netns", "exec", cn, "ip", "addr", "add", &ip, "dev", "eth0"]);
    step(&mut steps, "up", &["ip", "netns", "exec", cn, "ip", "link", "set", "eth0", "up"]);
    step(
        &mut steps,
        "route",
        &["ip", "netns", "exec", cn, "ip", "route", "replace", "default", "via", "198.19.128.1", "dev", "eth0"],
    );
    step(&mut steps, "ethtool", &["ip", "netns", "exec", cn, "ethtool", "-K", "eth0", "tx", "off"]);
    steps
}

/// Runs one command of the recipe, timing it.
fn step(steps: &mut Vec<(String, f64)>, name: &str, args: &[&str]) {
    let t = Instant::now();
    run(args);
    steps.push((name.to_owned(), ms(t.elapsed())));
}

pub(crate) fn bench_plug(r: &mut Report) {
    let n = env_num("BENCH_PLUG_N", 100);
    r.line("### `plug`: plug latency against the nova-docker shell recipe (one host, CLI process included)");
    r.line("");
    r.line(
        "ovs-vswitchd (userspace datapath) walks every port of the host whenever OVSDB changes \
         *and* whenever a link appears, goes up or leaves its namespace, so part of each plug's \
         time is that walk for the plug's own veth and port, growing with the ports already on \
         br-int. Round A alternates the two and starts each plug once ovs-vswitchd is idle; \
         round B alternates them back to back, so each plug also waits for the walks the \
         previous plug (of the other kind) left in flight; round C runs each back to back on a \
         host of its own (agent first, then shell), so each waits only for its own. Each round \
         is on fresh hosts.",
    );
    r.line("");
    let rounds = std::env::var("BENCH_PLUG_ROUNDS").unwrap_or_else(|_| "ABC".into());
    for round in [Round::Settled, Round::Alternating, Round::Apart] {
        if rounds.contains(round.letter()) {
            plug_round(r, n, round);
        }
    }
}

/// How a plug round orders the agent's and the shell's plugs.
#[derive(Clone, Copy, PartialEq)]
enum Round {
    /// Alternating on one host, each plug starting with ovs-vswitchd idle.
    Settled,
    /// Alternating on one host, back to back.
    Alternating,
    /// Each back to back on a host of its own.
    Apart,
}

impl Round {
    /// Its letter in `BENCH_PLUG_ROUNDS` and in the report.
    fn letter(self) -> char {
        match self {
            Round::Settled => 'A',
            Round::Alternating => 'B',
            Round::Apart => 'C',
        }
    }
}

/// ovs-vswitchd's `bridge_reconfigure` count so far (`coverage/show`).
fn bridge_reconfigures(host: &TestHost) -> u64 {
    host.vswitchd()
        .appctl(&["coverage/show"])
        .lines()
        .find(|l| l.starts_with("bridge_reconfigure "))
        .and_then(|l| l.rsplit("total:").next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits (up to 2 s) until ovs-vswitchd's main thread used under 0.2 ms of CPU in 30 ms.
fn wait_vswitchd_idle(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut last = main_thread_cpu_ns(pid);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(30));
        let now = main_thread_cpu_ns(pid);
        if now.saturating_sub(last) < 200_000 {
            return;
        }
        last = now;
    }
}

fn plug_round(r: &mut Report, n: usize, round: Round) {
    let c = Cluster::start(if round == Round::Apart { 2 } else { 1 }, &[]);
    let (agent, host) = (&c.agents[0], &c.hosts[0]);
    let shell_host = c.hosts.last().expect("a host");
    let vswitchd = host.vswitchd().pid().expect("ovs-vswitchd pid");
    let settle = || {
        if round == Round::Settled {
            wait_vswitchd_idle(vswitchd);
        }
    };
    let trace_dir = std::env::var_os("BENCH_TRACE_DIR").map(std::path::PathBuf::from);
    if trace_dir.is_some() {
        for h in [host, shell_host] {
            for module in ["bridge", "netdev_linux", "route_table", "poll_loop", "ofproto_dpif", "dpif_netdev"] {
                h.vswitchd().appctl(&["vlog/set", &format!("{module}:file:dbg")]);
            }
        }
    }
    agent.cli_ok(&["tenant", "create", "plug", "--vni", "7001", "--cidr", "198.19.0.0/17", "--tunnel", "vxlan"]);
    agent.cli_ok(&["tenant", "join", "plug"]);
    // The floor: a CLI process that only asks the daemon for its status.
    let floor: Vec<f64> = (0..30)
        .map(|_| {
            let t = Instant::now();
            agent.cli_ok(&["status", "--json"]);
            ms(t.elapsed())
        })
        .collect();
    let ca: Vec<Container> = (0..n).map(|_| Container::new("pa")).collect();
    let cs: Vec<Container> = (0..n).map(|_| Container::new("ps")).collect();
    let (mut a_ms, mut s_ms) = (Vec::new(), Vec::new());
    let (mut a_ips, mut a_ports, mut s_steps) = (Vec::new(), Vec::new(), Vec::new());
    let reconfigures_of =
        || bridge_reconfigures(host) + if round == Round::Apart { bridge_reconfigures(shell_host) } else { 0 };
    let reconfigures_before = reconfigures_of();
    let mut agent_plug = |i: usize| {
        let path = ca[i].path().display().to_string();
        let id = format!("bench-a{i}");
        let t = Instant::now();
        let out = agent.cli(&["plug", &id, "--tenant", "plug", "--netns", &path]);
        a_ms.push(ms(t.elapsed()));
        if !out.status.success() {
            // What ovs-vswitchd made of it, before the hosts and their logs are removed.
            let log = std::fs::read_to_string(host.vswitchd().log_path()).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "plug {i} failed; ovs-vswitchd's log ends with:\n{}",
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
            eprintln!("links: {}", host.netns().ip(&["-br", "link"]));
        }
        let plugged = ok_json(&out, "plug");
        a_ips.push(plugged["ip"].as_str().unwrap_or_default().to_owned());
        a_ports.push(plugged["port"].as_str().unwrap_or_default().to_owned());
    };
    let mut shell_plug = |i: usize| {
        let t = Instant::now();
        s_steps.push(nova_docker_plug(shell_host, &cs[i], i));
        s_ms.push(ms(t.elapsed()));
    };
    if round == Round::Apart {
        // One after the other, so neither loads the machine while the other is timed.
        (0..n).for_each(&mut agent_plug);
        (0..n).for_each(&mut shell_plug);
    } else {
        // Interleaved, so both see the same growing database and the same machine load.
        for i in 0..n {
            settle();
            agent_plug(i);
            settle();
            shell_plug(i);
        }
    }
    // Both ways give working containers: neighbours on the same host answer.
    wait_ping(&ca[0], &a_ips[n - 1], Duration::from_secs(10));
    wait_ping(&cs[0], &format!("198.19.{}.{}", 129 + (n - 1) / 250, 1 + (n - 1) % 250), Duration::from_secs(10));
    let reconfigures = reconfigures_of() - reconfigures_before;
    // The agent sends the port's row and creates its veth together; when ovs-vswitchd reaches
    // the row before the link exists it logs this and takes the port at the link's event.
    let vswitchd_log = std::fs::read_to_string(host.vswitchd().log_path()).unwrap_or_default();
    let missing_lines: Vec<&str> = vswitchd_log
        .lines()
        .filter(|l| l.contains("could not open network device") && l.contains("No such device"))
        .collect();
    let missing = missing_lines.len();
    // Which of the agent's plugs (1-based): the race is lost when the bridge is small.
    let missing_at: Vec<String> = a_ports
        .iter()
        .enumerate()
        .filter(|(_, p)| missing_lines.iter().any(|l| l.contains(&format!("device {p} "))))
        .map(|(i, _)| (i + 1).to_string())
        .collect();
    let logs = agent.logs();
    if let Some(dir) = &trace_dir {
        let tag = round.letter();
        std::fs::create_dir_all(dir).expect("BENCH_TRACE_DIR");
        let _ = std::fs::copy(host.vswitchd().log_path(), dir.join(format!("round-{tag}-vswitchd.log")));
        if round == Round::Apart {
            let _ =
                std::fs::copy(shell_host.vswitchd().log_path(), dir.join(format!("round-{tag}-shell-vswitchd.log")));
        }
        std::fs::write(dir.join(format!("round-{tag}-agent.log")), &logs).expect("agent log copy");
        // What ovs-vswitchd did over the round (revalidations, upcalls, flow-table changes), and
        // the datapath flows the round's traffic left.
        for (name, args) in [
            ("coverage", &["coverage/show"][..]),
            ("upcall", &["upcall/show"][..]),
            ("dpctl", &["dpctl/dump-flows"][..]),
        ] {
            let out = host.vswitchd().try_appctl(args).unwrap_or_else(|e| e.to_string());
            std::fs::write(dir.join(format!("round-{tag}-{name}.txt")), out).expect("appctl output");
        }
        let _ = std::fs::copy(c.etcd.log_path(), dir.join(format!("round-{tag}-etcd.log")));
        let times: Vec<String> = a_ms.iter().zip(&s_ms).map(|(a, s)| format!("{a:.2} {s:.2}")).collect();
        std::fs::write(dir.join(format!("round-{tag}-ms.txt")), times.join("\n")).expect("timings");
    }
    if std::env::var_os("BENCH_DEBUG").is_some() {
        let lines: Vec<&str> = logs.lines().collect();
        eprintln!("--- agent log (tail) ---\n{}", lines[lines.len().saturating_sub(80)..].join("\n"));
    }
    let steps = plug_steps(&logs);
    let (a, s, f) = (stats(&a_ms), stats(&s_ms), stats(&floor));
    r.line(match round {
        Round::Settled => "**Round A: alternating on one host, each plug starting with ovs-vswitchd idle.**",
        Round::Alternating => "**Round B: alternating on one host, back to back.**",
        Round::Apart => "**Round C: each back to back on a host of its own (100 agent plugs, then 100 shell plugs).**",
    });
    r.line("");
    r.table(
        &LAT_HEADER,
        &[
            lat_row("`overlay-agent plug` (agent)", "ms", &a),
            lat_row(
                if std::env::var_os("BENCH_SHELL_IPV6_OFF").is_some() {
                    "shell recipe + IPv6 off on both ends (11 processes; an experiment, not the seed's recipe)"
                } else {
                    "nova-docker shell recipe (9 processes)"
                },
                "ms",
                &s,
            ),
            lat_row("`overlay-agent status --json` (CLI round trip, the floor)", "ms", &f),
        ],
    );
    r.line(format!(
        "Ratio shell / agent: **{:.1}x at p50**, {:.1}x at p99 (target: at least 5x). \
         First 10 vs last 10 agent plugs (mean): {:.1} / {:.1} ms; shell: {:.1} / {:.1} ms.",
        s.p50 / a.p50,
        s.p99 / a.p99,
        a_ms[..10.min(n)].iter().sum::<f64>() / 10f64.min(n as f64),
        a_ms[n.saturating_sub(10)..].iter().sum::<f64>() / 10f64.min(n as f64),
        s_ms[..10.min(n)].iter().sum::<f64>() / 10f64.min(n as f64),
        s_ms[n.saturating_sub(10)..].iter().sum::<f64>() / 10f64.min(n as f64),
    ));
    r.line("");
    // The rare case where no later pass took such a port and the agent had to ask for one.
    let nudged = logs.lines().filter(|l| l.contains("asking it to reconfigure")).count();
    r.line(format!(
        "ovs-vswitchd reconfigured {reconfigures} times during the {n} + {n} plugs ({:.1} per plug); \
         it found a port's device missing {missing} times (its log's \"No such device\"), \
         at the agent's plugs number [{}]; the agent had to ask it to reconfigure {nudged} times.",
        reconfigures as f64 / (2 * n) as f64,
        missing_at.join(", ")
    ));
    r.line("");
    // What each spends besides waiting for ovs-vswitchd (the agent's wait for the ofport, the
    // shell's ovs-vsctl, which waits for the same reconfiguration and reads the database).
    let without = |totals: &[f64], plugs: &[Vec<(String, f64)>], wait: &str| {
        let v: Vec<f64> = totals
            .iter()
            .zip(plugs)
            .map(|(t, p)| t - p.iter().find(|(n, _)| n == wait).map_or(0.0, |(_, ms)| *ms))
            .collect();
        stats(&v).p50
    };
    if steps.len() == a_ms.len() {
        let (a_own, s_own) = (without(&a_ms, &steps, "vswitchd"), without(&s_ms, &s_steps, "ovs-vsctl"));
        let cli = without(&a_ms, &steps, "total in the agent");
        r.line(format!(
            "Without the wait for ovs-vswitchd (p50): agent {} ms (of which {} ms outside the agent's plug: \
             the CLI process and the API call), shell {} ms: **{:.1}x**.",
            f1(a_own),
            f1(cli),
            f1(s_own),
            s_own / a_own
        ));
        r.line("");
    }
    plug_steps_table(r, "Inside the agent (step timings from its log", &steps);
    plug_steps_table(r, "The shell recipe (each process timed", &s_steps);
}

/// The `steps=name:ms,...` field of each "container plugged" line of the agent's log, in order.
fn plug_steps(logs: &str) -> Vec<Vec<(String, f64)>> {
    logs.lines()
        .filter(|l| l.contains("container plugged"))
        .filter_map(|l| {
            let field = |name: &str| l.split_whitespace().find_map(|w| w.strip_prefix(name));
            let mut steps: Vec<(String, f64)> = field("steps=")?
                .split(',')
                .filter_map(|p| p.split_once(':'))
                .filter_map(|(n, v)| Some((n.to_owned(), v.parse().ok()?)))
                .collect();
            steps.push(("total in the agent".to_owned(), field("took_ms=")?.trim_matches('"').parse().ok()?));
            Some(steps)
        })
        .collect()
}

/// Where a plug's time went, step by step, in the first and last tenth of the plugs.
fn plug_steps_table(r: &mut Report, what: &str, plugs: &[Vec<(String, f64)>]) {
    if plugs.is_empty() {
        r.line("(the agent's log had no step timings)");
        r.line("");
        return;
    }
    let tenth = (plugs.len() / 10).max(1);
    let (first, last) = (&plugs[..tenth], &plugs[plugs.len() - tenth..]);
    let names: Vec<String> = plugs[0].iter().map(|(n, _)| n.clone()).collect();
    let p50_of = |set: &[Vec<(String, f64)>], name: &str| {
        let v: Vec<f64> = set.iter().filter_map(|p| p.iter().find(|(n, _)| n == name).map(|(_, ms)| *ms)).collect();
        stats(&v).p50
    };
    let rows: Vec<Vec<String>> = names
        .iter()
        .map(|n| vec![format!("`{n}`"), f1(p50_of(first, n)), f1(p50_of(last, n)), f1(p50_of(plugs, n))])
        .collect();
    r.line(format!("{what}, ms, p50 of the first {tenth} / last {tenth} / all {} plugs):", plugs.len()));
    r.line("");
    r.table(&["step", "first", "last", "all"], &rows);
}
