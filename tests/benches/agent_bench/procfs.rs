//! What the benchmark reads of other processes: memory, CPU time, and the agent's counters.

use serde_json::Value;

use crate::report::run;

/// KiB as "N MiB = M MB", so a target in either unit reads off directly.
pub(crate) fn mem(kib: u64) -> String {
    format!("{:.1} MiB = {:.1} MB", kib as f64 / 1024.0, kib as f64 * 1024.0 / 1e6)
}

/// (VmRSS, VmHWM) of `pid` in KiB.
pub(crate) fn rss_kib(pid: u32) -> (u64, u64) {
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
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

pub(crate) fn clk_tck() -> f64 {
    run(&["getconf", "CLK_TCK"]).trim().parse().unwrap_or(100.0)
}

/// CPU time of a process's main thread in ns (`/proc/PID/schedstat`), where ovs-vswitchd
/// reconfigures.
pub(crate) fn main_thread_cpu_ns(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap_or_default();
    s.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// (OVSDB transactions, reconcile passes) from an agent's status.
pub(crate) fn counters(status: &Value) -> (u64, u64) {
    let c = &status["counters"];
    (c["ovsdb_transactions"].as_u64().unwrap_or(0), c["reconciles"].as_u64().unwrap_or(0))
}
