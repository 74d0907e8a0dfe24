//! Numbers and the report: order statistics, the markdown report, running helper commands.

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

/// A number from the environment, or `default`.
pub(crate) fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A duration in milliseconds.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Order statistics of a sample (milliseconds or any unit).
pub(crate) struct Stats {
    pub(crate) n: usize,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

pub(crate) fn stats(v: &[f64]) -> Stats {
    assert!(!v.is_empty(), "no samples");
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    // Nearest rank.
    let rank = |p: f64| s[((p / 100.0 * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    Stats { n: s.len(), p50: rank(50.0), p90: rank(90.0), p99: rank(99.0), min: s[0], max: s[s.len() - 1] }
}

/// A number with three significant digits or so.
pub(crate) fn f1(x: f64) -> String {
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
pub(crate) struct Report {
    pub(crate) md: String,
}

impl Report {
    pub(crate) fn line(&mut self, s: impl AsRef<str>) {
        eprintln!("{}", s.as_ref());
        self.md.push_str(s.as_ref());
        self.md.push('\n');
    }

    pub(crate) fn table(&mut self, header: &[&str], rows: &[Vec<String>]) {
        self.line(format!("| {} |", header.join(" | ")));
        self.line(format!("|{}", "---|".repeat(header.len())));
        for r in rows {
            self.line(format!("| {} |", r.join(" | ")));
        }
        self.line("");
    }
}

/// The columns every latency row has.
pub(crate) const LAT_HEADER: [&str; 7] = ["measurement", "n", "p50", "p90", "p99", "min", "max"];

pub(crate) fn lat_row(what: &str, unit: &str, s: &Stats) -> Vec<String> {
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
pub(crate) fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn ok_json(out: &Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: bad JSON: {e}"))
}
