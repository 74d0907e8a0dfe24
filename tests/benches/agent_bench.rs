//! overlay-agent end to end: plug latency against the nova-docker shell recipe, convergence
//! across hosts, the control plane at 1,000 peers x 20 tenants, the data plane against a
//! hand-built datapath and the bare underlay, and instruction counts of the pure reconcile path.
//!
//! `make bench` runs it (see `scripts/bench.sh`); by hand, after
//! `cargo build --release -p overlay-agent` and
//! `cargo build --release -p overlay --example reconcile_cost`:
//!
//! ```sh
//! cargo bench -p overlay-tests --bench agent_bench -- [--out FILE] [plug] [convergence] [scale] [dataplane] [callgrind]
//! ```
//!
//! No section named: all of them. The report is markdown, on stdout and in `--out FILE`.
//! Environment: `BENCH_PLUG_N` (containers, default 100), `BENCH_CONV_TRIALS` (default 20),
//! `BENCH_CONV_HOSTS` (default "3,10"), `BENCH_SCALE_PEERS` (default 1000),
//! `BENCH_SCALE_TENANTS` (default 20), `BENCH_PLUG_ROUNDS` (default "ABC": which plug rounds
//! to run, each letter once), `BENCH_IPERF_SECS` (default 5), `BENCH_IPERF_RUNS`
//! (default 3), `BENCH_IDLE_SECS` (default 10); `BENCH_DEBUG=1` prints agent logs,
//! `BENCH_AGENT_ENV="K=V,..."` adds environment to the scale benchmark's agent;
//! `BENCH_TRACE_DIR=DIR` keeps each plug round's ovs-vswitchd log (with its main loop,
//! `bridge`, `netdev_linux`, `route_table` and datapath modules at debug), agent log and etcd
//! log in DIR (`scripts/plug-trace.py` reads them); `BENCH_SHELL_IPV6_OFF=1` (an experiment, never
//! the baseline) adds two `sysctl` processes to the shell recipe that turn IPv6 off on its veth
//! ends, as the agent does on its own, to measure what the shell's IPv6 costs the agent's plugs.
//!
//! `cargo test --all-targets` runs this binary without `--bench`: it then returns at once.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use overlay::model::{HostRecord, SubnetLease, Tenant, TunnelType, Vni};
use overlay_tests::{agent_binary, Cluster};
use serde_json::{json, Value};
use testbed::{wait_ping, Container, Etcd, OvsdbServer, TestHost};

// ---------------------------------------------------------------------------------------------
// Small helpers: numbers, processes, the report.

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Order statistics of a sample (milliseconds or any unit).
struct Stats {
    n: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    min: f64,
    max: f64,
}

fn stats(v: &[f64]) -> Stats {
    assert!(!v.is_empty(), "no samples");
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    // Nearest rank.
    let rank = |p: f64| s[((p / 100.0 * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    Stats { n: s.len(), p50: rank(50.0), p90: rank(90.0), p99: rank(99.0), min: s[0], max: s[s.len() - 1] }
}

fn f1(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// A markdown report built section by section; echoed to stderr as it grows.
#[derive(Default)]
struct Report {
    md: String,
}

impl Report {
    fn line(&mut self, s: impl AsRef<str>) {
        eprintln!("{}", s.as_ref());
        self.md.push_str(s.as_ref());
        self.md.push('\n');
    }

    fn table(&mut self, header: &[&str], rows: &[Vec<String>]) {
        self.line(format!("| {} |", header.join(" | ")));
        self.line(format!("|{}", "---|".repeat(header.len())));
        for r in rows {
            self.line(format!("| {} |", r.join(" | ")));
        }
        self.line("");
    }
}

/// The columns every latency row has.
const LAT_HEADER: [&str; 7] = ["measurement", "n", "p50", "p90", "p99", "min", "max"];

fn lat_row(what: &str, unit: &str, s: &Stats) -> Vec<String> {
    vec![
        what.to_owned(),
        s.n.to_string(),
        format!("{} {unit}", f1(s.p50)),
        format!("{} {unit}", f1(s.p90)),
        format!("{} {unit}", f1(s.p99)),
        format!("{} {unit}", f1(s.min)),
        format!("{} {unit}", f1(s.max)),
    ]
}

#[track_caller]
fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ok_json(out: &Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: bad JSON: {e}"))
}

/// (VmRSS, VmHWM) of `pid` in KiB.
/// KiB as "N MiB = M MB", so a target in either unit reads off directly.
fn mem(kib: u64) -> String {
    format!("{:.1} MiB = {:.1} MB", kib as f64 / 1024.0, kib as f64 * 1024.0 / 1e6)
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("VmRSS:"), get("VmHWM:"))
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn clk_tck() -> f64 {
    run(&["getconf", "CLK_TCK"]).trim().parse().unwrap_or(100.0)
}

fn counters(status: &Value) -> (u64, u64) {
    let c = &status["counters"];
    (c["ovsdb_transactions"].as_u64().unwrap_or(0), c["reconciles"].as_u64().unwrap_or(0))
}

// ---------------------------------------------------------------------------------------------
// 1. Plug latency: overlay-agent plug vs the nova-docker shell recipe.

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

fn bench_plug(r: &mut Report) {
    let n = env_num("BENCH_PLUG_N", 100);
    r.line("### 1. Plug latency (one host, CLI process included)");
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

/// CPU time of a process's main thread in ns (`/proc/PID/schedstat`), where ovs-vswitchd
/// reconfigures.
fn main_thread_cpu_ns(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap_or_default();
    s.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0)
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

// ---------------------------------------------------------------------------------------------
// 2. Convergence: first plug of a tenant on a host -> a container on another host reaches it.

fn bench_convergence(r: &mut Report, hosts: u8, trials: usize) {
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
        std::thread::sleep(Duration::from_millis(200));
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

// ---------------------------------------------------------------------------------------------
// 3. Control plane at scale: one agent, OVSDB without vswitchd, 1,000 peers x 20 tenants.

/// An agent run from an explicit command line (no [`TestHost`]).
struct RawAgent {
    child: Option<Child>,
    dir: tempfile::TempDir,
    args: Vec<String>,
    runs: u32,
}

impl RawAgent {
    fn new(args: Vec<String>) -> Self {
        let dir = tempfile::Builder::new().prefix("bench-agent-").tempdir().expect("tempdir");
        std::fs::write(dir.path().join("agent.toml"), "").expect("config");
        RawAgent { child: None, dir, args, runs: 0 }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("api.sock")
    }

    fn log(&self) -> String {
        (1..=self.runs)
            .map(|n| std::fs::read_to_string(self.dir.path().join(format!("agent-{n}.log"))).unwrap_or_default())
            .collect()
    }

    /// Spawns the agent and waits until its API answers.
    fn start(&mut self, ovsdb: &str) {
        self.runs += 1;
        let log = std::fs::File::create(self.dir.path().join(format!("agent-{}.log", self.runs))).expect("log");
        let child = Command::new(agent_binary())
            .args(&self.args)
            .args(["--ovsdb", ovsdb, "--api-socket"])
            .arg(self.socket())
            .arg("--config")
            .arg(self.dir.path().join("agent.toml"))
            .envs(extra_env())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawning overlay-agent");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("overlay-agent exited with {st}:\n{}", self.log());
            }
            if self.socket().exists() && self.cli(&["status"]).status.success() {
                return;
            }
            assert!(Instant::now() < deadline, "agent not ready:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(agent_binary()).arg("--api-socket").arg(self.socket()).args(args).output().expect("CLI")
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "{args:?}: {}\n{}", String::from_utf8_lossy(&out.stderr), self.log());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn status(&self) -> Value {
        serde_json::from_str(&self.cli_ok(&["status", "--json"])).expect("status JSON")
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("agent running")
    }

    fn stop(&mut self) {
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
}

impl Drop for RawAgent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `BENCH_AGENT_ENV="K=V,K2=V2"`: extra environment for the scale benchmark's agent (to try
/// allocator or logging settings).
fn extra_env() -> Vec<(String, String)> {
    let spec = std::env::var("BENCH_AGENT_ENV").unwrap_or_default();
    spec.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

fn peer(i: usize) -> HostRecord {
    HostRecord {
        hostname: format!("peer-{i:05}"),
        underlay_ip: format!("10.{}.{}.{}", 64 + (i >> 16), (i >> 8) & 0xff, i & 0xff).parse().expect("ip"),
        system_id: format!("sys-peer-{i:05}"),
        machine_id: format!("machine-peer-{i:05}"),
        tunnel_types: TunnelType::ALL.to_vec(),
        version: "bench".into(),
    }
}

fn scale_tenant(t: usize) -> Tenant {
    let tunnel = if t % 2 == 0 { TunnelType::Vxlan } else { TunnelType::Gre };
    Tenant::new(
        &format!("scale-{t:02}"),
        Vni::new(9000 + t as u32).expect("vni"),
        "10.0.0.0/8".parse().unwrap(),
        tunnel,
        24,
    )
    .expect("tenant")
}

/// Lease `index` (1-based) of a tenant: 10.a.b.0/24, never the gateway's 10.0.0.0/24.
fn scale_lease(tenant: &Tenant, index: usize, h: &HostRecord) -> SubnetLease {
    SubnetLease {
        tenant: tenant.name().to_owned(),
        subnet: format!("10.{}.{}.0/24", index >> 8, index & 0xff).parse().expect("subnet"),
        host: h.hostname.clone(),
        underlay_ip: h.underlay_ip,
    }
}

/// Every etcd key/value a peer's registration writes: host record, underlay claim, leases.
fn peer_kvs(prefix: &str, h: &HostRecord, tenants: &[Tenant], lease_index: usize) -> Vec<(String, Vec<u8>)> {
    let mut kv = vec![
        (format!("{prefix}/hosts/{}", h.hostname), h.to_json()),
        (
            format!("{prefix}/underlays/{}", h.underlay_ip),
            json!({"host": h.hostname, "system_id": h.system_id}).to_string().into_bytes(),
        ),
    ];
    for t in tenants {
        let l = scale_lease(t, lease_index, h);
        kv.push((
            format!("{prefix}/subnets/{}/{}", t.name(), overlay::model::lease_key_segment(&l.subnet)),
            l.to_json(),
        ));
    }
    kv
}

async fn etcd_put_all(c: &mut etcd_client::Client, kvs: Vec<(String, Vec<u8>)>) {
    // etcd's default limit is 128 operations per transaction.
    for chunk in kvs.chunks(100) {
        let ops: Vec<etcd_client::TxnOp> =
            chunk.iter().map(|(k, v)| etcd_client::TxnOp::put(k.as_str(), v.clone(), None)).collect();
        c.txn(etcd_client::Txn::new().and_then(ops)).await.expect("etcd txn");
    }
}

fn tunnel_count(replica: &ovsdb_client::Replica) -> usize {
    replica
        .table("Interface")
        .rows()
        .filter(|(_, r)| r.get_as::<String>("name").is_ok_and(|n| n.starts_with("vx-") || n.starts_with("gr-")))
        .count()
}

async fn ovsdb_watcher(server: &OvsdbServer) -> ovsdb_client::Client {
    let remote: ovsdb_client::Remote = server.unix_remote().parse().expect("remote");
    let opts = ovsdb_client::ClientOptions::new(remote, "Open_vSwitch")
        .monitor(ovsdb_client::MonitorRequests::new().table("Interface", ["name"]))
        .index("Interface", "name");
    ovsdb_client::Client::connect(opts).await.expect("OVSDB watcher")
}

async fn wait_tunnels(w: &ovsdb_client::Client, want: usize, within: Duration) {
    if w.wait_until(within, |r| tunnel_count(r) == want).await.is_err() {
        panic!("OVSDB did not reach {want} tunnel ports within {within:?} (has {})", tunnel_count(&w.replica()));
    }
}

fn bench_scale(r: &mut Report) {
    let peers = env_num("BENCH_SCALE_PEERS", 1000);
    let n_tenants = env_num("BENCH_SCALE_TENANTS", 20);
    let idle_secs = env_num("BENCH_IDLE_SECS", 10) as u64;
    let total = peers * n_tenants;
    r.line(format!("### 3. Control plane at scale ({peers} peers x {n_tenants} tenants = {total} tunnel ports)"));
    r.line("");
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let etcd = Etcd::start();
    let prefix = "/scale";
    let tenants: Vec<Tenant> = (0..n_tenants).map(scale_tenant).collect();
    let t = Instant::now();
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([etcd.endpoint()], None).await.expect("etcd");
        let mut kvs = Vec::new();
        for t in &tenants {
            kvs.push((format!("{prefix}/tenants/{}", t.name()), t.to_json()));
            kvs.push((format!("{prefix}/vnis/{}", t.vni()), t.name().as_bytes().to_vec()));
        }
        for i in 1..=peers {
            kvs.extend(peer_kvs(prefix, &peer(i), &tenants, i));
        }
        etcd_put_all(&mut c, kvs).await;
    });
    let populate = t.elapsed();

    let ovsdb1 = OvsdbServer::start();
    ovsdb1.vsctl(&["set", "Open_vSwitch", ".", "external_ids:system-id=scale-local"]);
    let args: Vec<String> = [
        "run",
        "--hostname",
        "scale-local",
        "--underlay-ip",
        "198.51.100.1",
        "--underlay-mtu",
        "1500",
        "--etcd-endpoints",
        &etcd.endpoint(),
        "--etcd-prefix",
        prefix,
        "--datapath-type",
        "netdev",
        "--log-level",
        "info",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut agent = RawAgent::new(args);
    let mut rows: Vec<Vec<String>> = Vec::new();
    let row = |what: &str, value: String| vec![what.to_owned(), value];

    // (a) Joining the tenants one by one: each join adds `peers` tunnel ports.
    agent.start(&ovsdb1.unix_remote());
    let w1 = rt.block_on(ovsdb_watcher(&ovsdb1));
    let (tx0, _) = counters(&agent.status());
    let mut joins = Vec::new();
    for (k, t) in tenants.iter().enumerate() {
        let start = Instant::now();
        agent.cli_ok(&["tenant", "join", t.name()]);
        rt.block_on(wait_tunnels(&w1, peers * (k + 1), Duration::from_secs(120)));
        joins.push(ms(start.elapsed()));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (tx1, _) = counters(&agent.status());
    let js = stats(&joins);
    rows.push(row(
        &format!("`tenant join` -> its {peers} tunnel ports in OVSDB (p50 / p99 / min-max over {n_tenants} joins)"),
        format!("{} / {} / {}-{} ms", f1(js.p50), f1(js.p99), f1(js.min), f1(js.max)),
    ));
    rows.push(row("OVSDB transactions for the joins", format!("{} for {n_tenants} joins", tx1 - tx0)));
    agent.stop();
    drop(w1);

    // (b) Cold start: same registration and leases, an empty OVSDB: every port in one pass.
    let ovsdb2 = OvsdbServer::start();
    ovsdb2.vsctl(&["set", "Open_vSwitch", ".", "external_ids:system-id=scale-local"]);
    let w2 = rt.block_on(ovsdb_watcher(&ovsdb2));
    let server_pid = ovsdb2.pid().expect("ovsdb-server pid");
    let (server_ticks, bench_ticks) = (cpu_ticks(server_pid), cpu_ticks(std::process::id()));
    let start = Instant::now();
    agent.start(&ovsdb2.unix_remote());
    let ready = start.elapsed();
    rt.block_on(wait_tunnels(&w2, total, Duration::from_secs(600)));
    let cold = start.elapsed();
    // Whose CPU the cold start is: the agent (which runs nothing else), ovsdb-server, and
    // this process (whose watcher decodes the same updates as the agent, on the same 2 CPUs).
    let secs = |ticks: u64| ticks as f64 / clk_tck();
    let cpu = (
        secs(cpu_ticks(agent.pid())),
        secs(cpu_ticks(server_pid) - server_ticks),
        secs(cpu_ticks(std::process::id()) - bench_ticks),
    );
    std::thread::sleep(Duration::from_secs(2));
    let pid = agent.pid();
    let (rss, hwm) = rss_kib(pid);
    let st = agent.status();
    let (tx, rec) = counters(&st);
    let tunnels_in_status = st["tunnels"].as_array().map_or(0, Vec::len);
    rows.push(row(
        &format!("cold start: agent spawned -> all {total} tunnel ports in OVSDB (empty OVSDB, everything in etcd)"),
        format!("{:.2} s (API ready after {:.0} ms)", cold.as_secs_f64(), ms(ready)),
    ));
    rows.push(row(
        "cold start: OVSDB transactions / reconcile passes",
        format!("{tx} / {rec} (status lists {tunnels_in_status} tunnels)"),
    ));
    rows.push(row(
        "cold start: CPU time of the agent / ovsdb-server / the benchmark's OVSDB watcher",
        format!("{:.2} / {:.2} / {:.2} s", cpu.0, cpu.1, cpu.2),
    ));
    rows.push(row("agent VmRSS 2 s after the cold start (VmHWM: peak)", format!("{} (peak {})", mem(rss), mem(hwm))));
    if let Some(p) = ovsdb2.pid() {
        rows.push(row("ovsdb-server VmRSS, for comparison", format!("{:.1} MiB", rss_kib(p).0 as f64 / 1024.0)));
    }

    // Idle CPU.
    let tck = clk_tck();
    let c0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(idle_secs));
    let c1 = cpu_ticks(pid);
    let idle_pct = (c1 - c0) as f64 / tck / idle_secs as f64 * 100.0;
    rows.push(row(
        &format!("idle CPU over {idle_secs} s (utime+stime)"),
        format!("{:.2} % of one core ({} ticks at {tck:.0} Hz)", idle_pct, c1 - c0),
    ));

    // (c) One peer joining (host record, underlay claim and a lease in every tenant, in one
    // etcd transaction), then leaving (all its keys deleted, as when its host lease expires).
    let trials = 10;
    let (mut join_ms, mut leave_ms) = (Vec::new(), Vec::new());
    let (mut join_tx, mut join_rec, mut leave_tx, mut leave_rec) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut c = rt.block_on(etcd_client::Client::connect([etcd.endpoint()], None)).expect("etcd");
    for k in 0..trials {
        let h = peer(peers + 1 + k);
        let peer_flows = |status: &serde_json::Value| -> u64 {
            let peers = status["peers"].as_array().cloned().unwrap_or_default();
            peers.iter().find(|p| p["host"] == h.hostname.as_str()).and_then(|p| p["flows"].as_u64()).unwrap_or(0)
        };
        let kvs = peer_kvs(prefix, &h, &tenants, peers + 1 + k);
        let keys: Vec<String> = kvs.iter().map(|(k, _)| k.clone()).collect();
        let (tx_a, rec_a) = counters(&agent.status());
        let start = Instant::now();
        rt.block_on(async {
            let ops: Vec<etcd_client::TxnOp> =
                kvs.iter().map(|(k, v)| etcd_client::TxnOp::put(k.as_str(), v.clone(), None)).collect();
            c.txn(etcd_client::Txn::new().and_then(ops)).await.expect("etcd txn");
        });
        testbed::wait_until(Duration::from_secs(30), "the peer's flows", || peer_flows(&agent.status()) > 0);
        join_ms.push(ms(start.elapsed()));
        std::thread::sleep(Duration::from_millis(500));
        let (tx_b, rec_b) = counters(&agent.status());
        join_tx.push((tx_b - tx_a) as f64);
        join_rec.push((rec_b - rec_a) as f64);
        let start = Instant::now();
        rt.block_on(async {
            let ops: Vec<etcd_client::TxnOp> =
                keys.iter().map(|k| etcd_client::TxnOp::delete(k.as_str(), None)).collect();
            c.txn(etcd_client::Txn::new().and_then(ops)).await.expect("etcd txn");
        });
        testbed::wait_until(Duration::from_secs(30), "the peer's flows gone", || peer_flows(&agent.status()) == 0);
        leave_ms.push(ms(start.elapsed()));
        std::thread::sleep(Duration::from_millis(500));
        let (tx_c, rec_c) = counters(&agent.status());
        leave_tx.push((tx_c - tx_b) as f64);
        leave_rec.push((rec_c - rec_b) as f64);
    }
    let (jm, lm) = (stats(&join_ms), stats(&leave_ms));
    rows.push(row(
        &format!("one peer joins ({n_tenants} leases): etcd write -> its {n_tenants} ports in OVSDB (p50 / p99 / min-max, {trials} trials)"),
        format!("{} / {} / {}-{} ms", f1(jm.p50), f1(jm.p99), f1(jm.min), f1(jm.max)),
    ));
    rows.push(row(
        "  OVSDB transactions / reconcile passes per join (median, max)",
        format!(
            "{} / {} (max {} / {})",
            stats(&join_tx).p50,
            stats(&join_rec).p50,
            stats(&join_tx).max,
            stats(&join_rec).max
        ),
    ));
    rows.push(row(
        &format!("one peer leaves: etcd delete -> its {n_tenants} ports gone (p50 / p99 / min-max)"),
        format!("{} / {} / {}-{} ms", f1(lm.p50), f1(lm.p99), f1(lm.min), f1(lm.max)),
    ));
    rows.push(row(
        "  OVSDB transactions / reconcile passes per leave (median, max)",
        format!(
            "{} / {} (max {} / {})",
            stats(&leave_tx).p50,
            stats(&leave_rec).p50,
            stats(&leave_tx).max,
            stats(&leave_rec).max
        ),
    ));
    // Read like the others, once the last event's passes are over: the figure is what the agent
    // holds, not where a pass happens to be (its peak is VmHWM).
    std::thread::sleep(Duration::from_secs(2));
    let (rss2, hwm2) = rss_kib(pid);
    rows.push(row("agent VmRSS 2 s after the last peer event (VmHWM)", format!("{} ({})", mem(rss2), mem(hwm2))));

    // (d) Restart against the full OVSDB: nothing to change.
    agent.stop();
    let start = Instant::now();
    agent.start(&ovsdb2.unix_remote());
    let ready = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (tx, rec) = loop {
        let st = agent.status();
        let (tx, rec) = counters(&st);
        if st["last_reconcile_ms_ago"].is_u64() || Instant::now() > deadline {
            break (tx, rec);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let first_pass = start.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let (tx2, rec2) = counters(&agent.status());
    let (rss3, hwm3) = rss_kib(agent.pid());
    rows.push(row(
        "restart against the full OVSDB: spawn -> first reconcile done",
        format!("{:.2} s (API ready after {:.0} ms)", first_pass.as_secs_f64(), ms(ready)),
    ));
    rows.push(row(
        "  OVSDB transactions / reconcile passes (at the first pass; 2 s later)",
        format!("{tx} / {rec}; {tx2} / {rec2}"),
    ));
    rows.push(row(
        "  agent VmRSS 2 s after this restart (replica and caches, no big transaction; VmHWM)",
        format!("{} ({})", mem(rss3), mem(hwm3)),
    ));
    agent.stop();
    if std::env::var_os("BENCH_DEBUG").is_some() {
        eprintln!("--- agent log ---\n{}", agent.log());
    }
    r.table(&["measurement", "result"], &rows);
    r.line(format!(
        "etcd was filled with {} keys in {:.1} s before the agent started (100 puts per etcd transaction).",
        2 * n_tenants + peers * (2 + n_tenants),
        populate.as_secs_f64()
    ));
    r.line("");
    drop(w2);
}

// ---------------------------------------------------------------------------------------------
// 4. Data plane: iperf3 through the agent's overlay, a hand-built one, and the bare underlay.

struct Iperf {
    gbps: f64,
    retransmits: u64,
    mss: u64,
}

fn iperf(server: &testbed::Netns, client: &testbed::Netns, ip: &str, secs: usize) -> Iperf {
    let mut srv = server
        .command(&["iperf3", "-s", "-1", "-p", "5299"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 (apt-get install iperf3)");
    std::thread::sleep(Duration::from_millis(400));
    let t = secs.to_string();
    let out = client.exec(&["timeout", "120", "iperf3", "-c", ip, "-p", "5299", "-t", &t, "-J"]);
    let _ = srv.kill();
    let _ = srv.wait();
    let j: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(out.status.success(), "iperf3 to {ip} failed: {}", String::from_utf8_lossy(&out.stdout));
    Iperf {
        gbps: j["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9,
        retransmits: j["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        mss: j["start"]["tcp_mss_default"].as_u64().unwrap_or(0),
    }
}

/// `Ip:` counters of /proc/net/snmp in a namespace, by name.
fn ip_snmp(ns: &testbed::Netns) -> std::collections::BTreeMap<String, u64> {
    let text = ns.run(&["cat", "/proc/net/snmp"]);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Ip:")).collect();
    let (names, values) = (lines[0].split_whitespace(), lines[1].split_whitespace());
    names.zip(values).skip(1).filter_map(|(n, v)| Some((n.to_owned(), v.parse().ok()?))).collect()
}

/// (errors + dropped) TX and RX of `dev` in `ns`.
fn link_faults(ns: &testbed::Netns, dev: &str) -> u64 {
    let j = ns.ip_json(&["-s", "link", "show", "dev", dev]);
    let s = &j[0]["stats64"];
    ["rx", "tx"].iter().flat_map(|d| ["errors", "dropped"].map(|k| s[d][k].as_u64().unwrap_or(0))).sum()
}

/// The lab's datapath by hand on both hosts, beside the agent's: bridges hbr-int/hbr-tun, patch
/// ports, one VXLAN tunnel (key 999, VLAN 1, protected) and a container plugged the lab's way.
fn hand_built(hosts: &[TestHost]) -> Vec<Container> {
    let mut out = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let other = &hosts[1 - i];
        h.vsctl_wait(&["add-br", "hbr-int", "--", "set", "bridge", "hbr-int", "datapath_type=netdev"]);
        h.vsctl_wait(&["add-br", "hbr-tun", "--", "set", "bridge", "hbr-tun", "datapath_type=netdev"]);
        h.vsctl_wait(&[
            "add-port",
            "hbr-int",
            "hpatch-tun",
            "--",
            "set",
            "interface",
            "hpatch-tun",
            "type=patch",
            "options:peer=hpatch-int",
        ]);
        h.vsctl_wait(&[
            "add-port",
            "hbr-tun",
            "hpatch-int",
            "--",
            "set",
            "interface",
            "hpatch-int",
            "type=patch",
            "options:peer=hpatch-tun",
        ]);
        h.vsctl_wait(&[
            "add-port",
            "hbr-tun",
            "hvx",
            "tag=1",
            "protected=true",
            "--",
            "set",
            "interface",
            "hvx",
            "type=vxlan",
            &format!("options:remote_ip={}", other.underlay_ip()),
            &format!("options:local_ip={}", h.underlay_ip()),
            "options:key=999",
        ]);
        let c = Container::new("dh");
        let hn = h.netns();
        hn.ip(&["link", "add", "hv0", "type", "veth", "peer", "name", "eth0", "netns", c.name()]);
        hn.ip(&["link", "set", "hv0", "up"]);
        h.vsctl_wait(&["add-port", "hbr-int", "hv0", "tag=1"]);
        c.ip(&["link", "set", "eth0", "address", &format!("02:00:00:00:99:0{}", i + 1), "mtu", "1450"]);
        c.ip(&["addr", "add", &format!("198.19.128.1{}/17", i + 1), "dev", "eth0"]);
        c.ip(&["link", "set", "eth0", "up"]);
        c.run(&["ethtool", "-K", "eth0", "tx", "off"]);
        out.push(c);
    }
    out
}

fn bench_dataplane(r: &mut Report) {
    let secs = env_num("BENCH_IPERF_SECS", 5);
    let runs = env_num("BENCH_IPERF_RUNS", 3);
    r.line(format!("### 4. Data plane (iperf3, one TCP stream, {secs} s x {runs} runs each, interleaved)"));
    r.line("");
    let c = Cluster::start(2, &[]);
    c.agents[0].cli_ok(&["tenant", "create", "dp", "--vni", "7301", "--cidr", "198.19.0.0/17", "--tunnel", "vxlan"]);
    let ca: Vec<Container> = (0..2).map(|_| Container::new("da")).collect();
    let mut ips = Vec::new();
    for (i, ctr) in ca.iter().enumerate() {
        let p = ctr.path().display().to_string();
        let j: Value =
            serde_json::from_str(&c.agents[i].cli_ok(&["plug", &format!("dp{i}"), "--tenant", "dp", "--netns", &p]))
                .expect("plug JSON");
        ips.push((j["ip"].as_str().unwrap().to_owned(), j["mtu"].as_u64().unwrap()));
    }
    wait_ping(&ca[0], &ips[1].0, Duration::from_secs(20));
    let ch = hand_built(&c.hosts);
    wait_ping(&ch[0], "198.19.128.12", Duration::from_secs(20));
    let (h0, h1) = (c.hosts[0].netns(), c.hosts[1].netns());
    let underlay_ip = c.hosts[1].underlay_ip().to_string();

    // Full-size frames cross without fragmentation: DF set, payload = MTU - 28.
    let mtu = ips[0].1 as usize;
    let ping_df = |size: usize| {
        ca[0].exec(&["ping", "-n", "-q", "-M", "do", "-c", "3", "-s", &size.to_string(), &ips[1].0]).status.success()
    };
    let full_ok = ping_df(mtu - 28);
    let over_refused = !ping_df(mtu - 27);

    let snmp_before: Vec<_> = ca.iter().map(|c| ip_snmp(c)).collect();
    let faults_before = link_faults(h0, "eth1") + link_faults(h1, "eth1");
    let (mut under, mut agent, mut hand) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        under.push(iperf(h1, h0, &underlay_ip, secs));
        agent.push(iperf(&ca[1], &ca[0], &ips[1].0, secs));
        hand.push(iperf(&ch[1], &ch[0], "198.19.128.12", secs));
    }
    let snmp_after: Vec<_> = ca.iter().map(|c| ip_snmp(c)).collect();
    let faults_after = link_faults(h0, "eth1") + link_faults(h1, "eth1");
    let frag = |k: &str| -> u64 {
        (0..2).map(|i| snmp_after[i].get(k).unwrap_or(&0) - snmp_before[i].get(k).unwrap_or(&0)).sum()
    };
    let summary = |v: &[Iperf]| {
        let s = stats(&v.iter().map(|x| x.gbps).collect::<Vec<_>>());
        let re: Vec<String> = v.iter().map(|x| x.retransmits.to_string()).collect();
        (s, re.join(", "), v[0].mss)
    };
    let (su, ru, mu) = summary(&under);
    let (sa, ra, ma) = summary(&agent);
    let (sh, rh, mh) = summary(&hand);
    let rowf = |what: &str, s: &Stats, re: &str, mss: u64, base: f64| {
        vec![
            what.to_owned(),
            format!("{:.2}", s.p50),
            format!("{:.2}-{:.2}", s.min, s.max),
            format!("{:.2}", s.p50 / base),
            re.to_owned(),
            mss.to_string(),
        ]
    };
    r.table(
        &["path", "Gbit/s p50", "min-max", "vs underlay", "retransmits per run", "TCP MSS"],
        &[
            rowf("underlay: host netns -> host netns over br-phy", &su, &ru, mu, su.p50),
            rowf("overlay built by the agent (VXLAN, VNI 7301)", &sa, &ra, ma, su.p50),
            rowf("same OVS, overlay built by hand (VXLAN, key 999)", &sh, &rh, mh, su.p50),
        ],
    );
    r.line(format!(
        "Agent overlay / hand-built overlay: **{:.2}** (p50). Container MTU {mtu}: ping with DF and \
         {} bytes of payload (a full {mtu}-byte packet) {}; {} bytes {}. During the runs the two \
         containers counted FragCreates {} and ReasmReqds {}, and the hosts' eth1 counted {} \
         errors + drops.",
        sa.p50 / sh.p50,
        mtu - 28,
        if full_ok { "crosses" } else { "DOES NOT cross" },
        mtu - 27,
        if over_refused { "is refused (needs fragmenting)" } else { "is NOT refused" },
        frag("FragCreates"),
        frag("ReasmReqds"),
        faults_after - faults_before
    ));
    r.line("");
}

// ---------------------------------------------------------------------------------------------
// 5. Instruction counts of the pure reconcile path.

fn bench_callgrind(r: &mut Report) {
    let exe = std::env::current_exe().expect("current_exe");
    let example = exe.parent().and_then(Path::parent).expect("target dir").join("examples/reconcile_cost");
    assert!(
        example.exists(),
        "{} is missing: cargo build --release -p overlay --example reconcile_cost",
        example.display()
    );
    r.line("### 5. Pure reconcile path, 1,000 peers x 20 tenants (callgrind instruction counts)");
    r.line("");
    let dir = tempfile::tempdir().expect("tempdir");
    let outfile = dir.path().join("callgrind.out");
    let vg = Command::new("valgrind")
        .args(["--tool=callgrind", &format!("--callgrind-out-file={}", outfile.display())])
        .arg(&example)
        .output()
        .expect("valgrind (apt-get install valgrind)");
    assert!(vg.status.success(), "valgrind failed: {}", String::from_utf8_lossy(&vg.stderr));
    let ann = run(&["callgrind_annotate", "--inclusive=yes", &outfile.display().to_string()]);
    let ir_of = |f: &str| -> u64 {
        ann.lines()
            .find(|l| {
                l.contains(&format!("reconcile_cost::{f} ")) || l.trim_end().ends_with(&format!("reconcile_cost::{f}"))
            })
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.replace(',', "").parse().ok())
            .unwrap_or(0)
    };
    let total: u64 = ann
        .lines()
        .find(|l| l.contains("PROGRAM TOTALS"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.replace(',', "").parse().ok())
        .unwrap_or(0);
    // Native wall time, median of 5 runs.
    let mut native: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for _ in 0..5 {
        for l in run(&[&example.display().to_string()]).lines() {
            if let Some((k, v)) = l.split_once(": ") {
                if let Some(v) = v.strip_suffix(" ms").and_then(|v| v.parse().ok()) {
                    native.entry(k.to_owned()).or_default().push(v);
                }
            }
        }
    }
    let phases = [
        ("phase_build_view", "build the ClusterView (1,001 hosts, 20 tenants, 20,020 leases)"),
        ("phase_desired", "desired_state, first start (no VLANs yet)"),
        ("phase_diff_cold", "diff against empty bridges (20,002 ports to create)"),
        ("phase_steady", "existing_vlans_from + desired_state + diff, nothing to change (an idle pass)"),
        ("phase_peer_join", "the same with one more peer (20 ports to create)"),
        (
            "phase_peer_join_since",
            "the agent's pass for that join while OVSDB is unchanged: desired_state + diff_since (changed tunnels only)",
        ),
    ];
    let rows: Vec<Vec<String>> = phases
        .iter()
        .map(|(f, what)| {
            let ir = ir_of(f);
            let wall = native.get(*f).map(|v| stats(v).p50).unwrap_or(0.0);
            vec![format!("`{f}`: {what}"), format!("{:.1} M", ir as f64 / 1e6), format!("{wall:.1} ms")]
        })
        .collect();
    r.table(&["phase", "Ir (instructions)", "native wall time, p50 of 5"], &rows);
    r.line(format!(
        "Whole program: {:.1} M instructions. Command: `valgrind --tool=callgrind {}` then \
         `callgrind_annotate --inclusive=yes` (inclusive Ir of each `phase_*` function).",
        total as f64 / 1e6,
        "target/release/examples/reconcile_cost"
    ));
    r.line("");
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        eprintln!(
            "agent_bench: benchmark not run (use `make bench` or `cargo bench -p overlay-tests --bench agent_bench`)"
        );
        return;
    }
    testbed::require_root();
    let mut out_file = None;
    let mut sections = BTreeSet::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out_file = it.next().cloned(),
            s if s.starts_with('-') => {}
            s => {
                sections.insert(s.to_owned());
            }
        }
    }
    let all = ["plug", "convergence", "scale", "dataplane", "callgrind"];
    if let Some(bad) = sections.iter().find(|s| !all.contains(&s.as_str())) {
        panic!("unknown section {bad:?}: choose from {all:?}");
    }
    let want = |s: &str| sections.is_empty() || sections.contains(s);
    let started = Instant::now();
    let mut r = Report::default();
    let mut timings = Vec::new();
    let mut timed = |name: &str, r: &mut Report, f: &mut dyn FnMut(&mut Report)| {
        if want(name) {
            let t = Instant::now();
            f(r);
            timings.push(format!("{name} {:.0} s", t.elapsed().as_secs_f64()));
        }
    };
    timed("plug", &mut r, &mut bench_plug);
    timed("convergence", &mut r, &mut |r: &mut Report| {
        let trials = env_num("BENCH_CONV_TRIALS", 20);
        r.line(format!("### 2. Convergence ({trials} trials per cluster size)"));
        r.line("");
        let sizes = std::env::var("BENCH_CONV_HOSTS").unwrap_or_else(|_| "3,10".into());
        for n in sizes.split(',').filter_map(|s| s.trim().parse::<u8>().ok()) {
            bench_convergence(r, n, trials);
        }
    });
    timed("scale", &mut r, &mut bench_scale);
    timed("dataplane", &mut r, &mut bench_dataplane);
    timed("callgrind", &mut r, &mut bench_callgrind);
    let mut md = r.md;
    let _ = writeln!(md, "Sections took: {} (total {:.0} s).", timings.join(", "), started.elapsed().as_secs_f64());
    println!("{md}");
    if let Some(f) = out_file {
        std::fs::write(&f, &md).unwrap_or_else(|e| panic!("writing {f}: {e}"));
    }
}
