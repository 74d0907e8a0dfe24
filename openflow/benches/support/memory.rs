//! What installing and reading back the agent's pipeline (60,041 flows: 1,000 peers x 20
//! tenants, cookies under one prefix) costs in time and memory, each way in a fresh child
//! process of this bench, so that no measurement inherits another's heap:
//! - `stream`: flows generated lazily into [`Connection::bundle_iter`], then
//!   [`Connection::dump_cookies`] of the prefix;
//! - `slice`: the same flows collected into a `Vec<FlowMod>` for [`Connection::bundle`], then
//!   [`Connection::dump_flows`] of the prefix;
//! - `cookies` / `flows`: a process that only dumps, the bridge already full (median of 5);
//! - `sizes`: `size_of` of the flow types and the heap of a typical flow.
//!
//! Growth is the peak RSS (`VmHWM`) less the RSS once connected; `/proc/self/clear_refs`
//! resets the peak where a phase is measured alone.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use openflow_client::{
    Action, Connection, ConnectionOptions, Field, Flow, FlowMod, FlowStatsRequest, Instructions, Match, Target,
};

use super::common;

/// Set in a child: the scenario to run.
pub const CHILD_ENV: &str = "OPENFLOW_BENCH_CHILD";
const SOCKET_ENV: &str = "OPENFLOW_BENCH_SOCKET";
/// The agent's cookie prefix in these runs.
pub const PREFIX: u16 = 0xa9e7;
const PEERS: u32 = 1000;
const TENANTS: u8 = 20;

fn status(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/self/status"))
}

fn rss_kb() -> u64 {
    status("VmRSS:")
}

fn peak_kb() -> u64 {
    status("VmHWM:")
}

/// Resets the peak RSS to the current RSS (Linux: `5` to clear_refs).
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS through /proc/self/clear_refs");
}

/// Runs scenario `name` in a child process against the bridge at `socket`; its results.
pub fn in_child(name: &str, socket: Option<&Path>) -> BTreeMap<String, String> {
    let exe = std::env::current_exe().expect("the bench's own path");
    let mut cmd = std::process::Command::new(exe);
    cmd.env(CHILD_ENV, name);
    if let Some(s) = socket {
        cmd.env(SOCKET_ENV, s);
    }
    let out = cmd.output().expect("run the bench's child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child {name} failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")).unwrap_or_else(|| panic!("no result: {stdout}"));
    line.split_whitespace().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect()
}

/// A typical flow: 4 match fields, 5 actions.
fn typical(i: u32) -> Flow {
    let m = Match::builder().vlan_vid(5).arp().arp_op(1).arp_tpa(i.into()).build().unwrap();
    Flow::builder(1, 20)
        .cookie(u64::from(i))
        .matching(m)
        .actions([
            Action::move_field(Field::EthSrc, Field::EthDst),
            Action::set_field(Field::EthSrc, 0x0200_0000_0001),
            Action::set_field(Field::ArpOp, 2),
            Action::move_field(Field::ArpSha, Field::ArpTha),
            Action::in_port(),
        ])
        .build()
        .unwrap()
}

/// The child's side: runs `name` and prints `RESULT key=value ...`.
pub fn child(name: &str) {
    if name == "sizes" {
        use std::mem::size_of;
        let n = 200_000u32;
        let before = rss_kb();
        let v: Vec<Flow> = (0..n).map(typical).collect();
        let per_flow = (rss_kb() - before) * 1024 / u64::from(n);
        let before = rss_kb();
        let m: Vec<Match> = v.iter().map(|f| f.matching.clone()).collect();
        let per_match = (rss_kb() - before) * 1024 / u64::from(n);
        drop((v, m));
        println!(
            "RESULT flow={} match={} action={} instructions={} flow_mod={} flow_total={per_flow} \
             flow_heap={} match_heap={}",
            size_of::<Flow>(),
            size_of::<Match>(),
            size_of::<Action>(),
            size_of::<Instructions>(),
            size_of::<FlowMod>(),
            per_flow - size_of::<Flow>() as u64,
            per_match - size_of::<Match>() as u64,
        );
        return;
    }
    let socket = std::env::var_os(SOCKET_ENV).expect("the bridge's socket");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let conn = Connection::connect(&Target::Unix(socket.into()), ConnectionOptions::default()).await.unwrap();
        let req = FlowStatsRequest::all().cookie(u64::from(PREFIX) << 48, 0xffff << 48);
        let base = rss_kb();
        reset_peak();
        let started = Instant::now();
        let (install, install_peak) = match name {
            "stream" => {
                conn.bundle_iter(common::pipeline_flows(PEERS, TENANTS, PREFIX).map(FlowMod::add)).await.unwrap();
                (Some(started.elapsed()), Some(peak_kb() - base))
            }
            "slice" => {
                let mods: Vec<FlowMod> = common::pipeline_flows(PEERS, TENANTS, PREFIX).map(FlowMod::add).collect();
                conn.bundle(&mods).await.unwrap();
                (Some(started.elapsed()), Some(peak_kb() - base))
            }
            _ => (None, None),
        };
        // After an install, one dump (the agent's sequence); a process that only dumps repeats
        // it and reports the median, ovs-vswitchd's own pace varying from one to the next.
        let rounds = if install.is_some() { 1 } else { 5 };
        let mut times = Vec::new();
        for _ in 0..rounds {
            let started = Instant::now();
            let n = match name {
                "stream" | "cookies" => conn.dump_cookies(&req).await.unwrap().len(),
                _ => conn.dump_flows(&req).await.unwrap().len(),
            };
            times.push(started.elapsed());
            assert_eq!(n, 60_041);
        }
        times.sort();
        let dump = times[rounds / 2];
        let mut line =
            format!("RESULT base_kb={base} dump_ms={:.0} peak_kb={}", dump.as_secs_f64() * 1e3, peak_kb() - base);
        if let (Some(t), Some(p)) = (install, install_peak) {
            line += &format!(" install_ms={:.0} install_peak_kb={p}", t.as_secs_f64() * 1e3);
        }
        println!("{line}");
    });
}
