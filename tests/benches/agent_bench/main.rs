//! overlay-agent end to end: plug latency against the nova-docker shell recipe, plug cost
//! against cluster size and concurrency, convergence across hosts, the flow data plane at
//! 1,000 peers x 20 tenants with a real ovs-vswitchd, the data plane against a hand-built
//! datapath and the bare underlay, and instruction counts of the pure reconcile path.
//!
//! `make bench` runs it (see `scripts/bench.sh`); by hand, after
//! `cargo build --release -p overlay-agent` and
//! `cargo build --release -p overlay --example reconcile_cost`:
//!
//! ```sh
//! cargo bench -p overlay-tests --bench agent_bench -- [--out FILE] [plug] [plugload] [convergence] [scale] [dataplane] [callgrind]
//! ```
//!
//! No section named: all of them. The report is markdown, on stdout and in `--out FILE`.
//! Environment (defaults are what `make bench` publishes):
//! - plug: `BENCH_PLUG_N` (containers per tool and round, 100), `BENCH_PLUG_ROUNDS` ("ABC":
//!   which rounds, each letter once), `BENCH_DEBUG=1` (the agent's log tail after each round),
//!   `BENCH_TRACE_DIR=DIR` (keeps each round's ovs-vswitchd log with its main loop, `bridge`,
//!   `netdev_linux`, `route_table` and datapath modules at debug, the agent log and the etcd
//!   log in DIR, for `scripts/plug-trace.py`), `BENCH_SHELL_IPV6_OFF=1` (an experiment, never
//!   the baseline: two `sysctl` processes in the shell recipe turn IPv6 off on its veth ends,
//!   as the agent does on its own);
//! - plugload: `BENCH_PLUGLOAD_N` (plugs per phase, 30), `BENCH_PLUGLOAD_FOREIGN` (endpoints of
//!   other hosts, 10,000), `BENCH_PLUGLOAD_BURST` (plugs at once, 20);
//! - convergence: `BENCH_CONV_TRIALS` (20), `BENCH_CONV_HOSTS` ("3,10");
//! - scale: `BENCH_SCALE_PEERS` (1000), `BENCH_SCALE_TENANTS` (20), `BENCH_SCALE_TRIALS` (peer
//!   joins and leaves, 20), `BENCH_SCALE_PLUGS` (plugs at scale and alone, taking turns, 20),
//!   `BENCH_IDLE_SECS` (10), `BENCH_SCALE_LOG` (the agent's log level, "info"; "debug" times
//!   each pass's phases), `BENCH_TRACE_DIR=DIR` (keeps the agent's log as DIR/scale-agent.log);
//! - dataplane: `BENCH_IPERF_SECS` (5), `BENCH_IPERF_RUNS` (3).
//!
//! `cargo test --all-targets` runs this binary without `--bench`: it then returns at once.
//!
//! One module per section ([`plug`], [`plug_load`], [`convergence`], [`scale`], [`dataplane`],
//! [`callgrind`]); [`report`] holds the statistics and the markdown report, [`procfs`] what is
//! read of other processes.

mod callgrind;
mod convergence;
mod dataplane;
mod plug;
mod plug_load;
mod procfs;
mod records;
mod report;
mod scale;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Instant;

use report::{env_num, Report};

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
    let all = ["plug", "plugload", "convergence", "scale", "dataplane", "callgrind"];
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
    timed("plug", &mut r, &mut plug::bench_plug);
    timed("plugload", &mut r, &mut plug_load::bench_plug_load);
    timed("convergence", &mut r, &mut |r: &mut Report| {
        let trials = env_num("BENCH_CONV_TRIALS", 20);
        r.line(format!("### `convergence`: first plug of a tenant on one host to a ping from another ({trials} trials per cluster size)"));
        r.line("");
        let sizes = std::env::var("BENCH_CONV_HOSTS").unwrap_or_else(|_| "3,10".into());
        for n in sizes.split(',').filter_map(|s| s.trim().parse::<u8>().ok()) {
            convergence::bench_convergence(r, n, trials);
        }
    });
    timed("scale", &mut r, &mut scale::bench_scale);
    timed("dataplane", &mut r, &mut dataplane::bench_dataplane);
    timed("callgrind", &mut r, &mut callgrind::bench_callgrind);
    let mut md = r.md;
    let _ = writeln!(md, "Sections took: {} (total {:.0} s).", timings.join(", "), started.elapsed().as_secs_f64());
    println!("{md}");
    if let Some(f) = out_file {
        std::fs::write(&f, &md).unwrap_or_else(|e| panic!("writing {f}: {e}"));
    }
}
