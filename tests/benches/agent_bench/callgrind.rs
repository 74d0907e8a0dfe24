//! Section "callgrind": instruction counts of the pure reconcile path (the `reconcile_cost` example
//! under callgrind) and its native wall time.

use std::path::Path;
use std::process::Command;

use crate::report::{run, stats, Report};

pub(crate) fn bench_callgrind(r: &mut Report) {
    let exe = std::env::current_exe().expect("current_exe");
    let example = exe.parent().and_then(Path::parent).expect("target dir").join("examples/reconcile_cost");
    assert!(
        example.exists(),
        "{} is missing: cargo build --release -p overlay --example reconcile_cost",
        example.display()
    );
    r.line(
        "### `callgrind`: the pure reconcile path, 1,000 peers x 20 tenants, one container each (instruction counts)",
    );
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
            .unwrap_or_else(|| panic!("no inclusive count for {f} in callgrind_annotate's output:\n{ann}"))
    };
    let total: u64 = ann
        .lines()
        .find(|l| l.contains("PROGRAM TOTALS"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("no PROGRAM TOTALS in callgrind_annotate's output:\n{ann}"));
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
        (
            "phase_bridges_steady",
            "existing_vlans_from + desired_state + diff, nothing to change (OVSDB half of an idle pass)",
        ),
        ("phase_flows", "desired_flows for the whole pipeline (a cold start's 60,000 flows)"),
        ("phase_flows_steady", "desired_flows + changes against a switch holding them (OpenFlow half of an idle pass)"),
        ("phase_peer_join", "both halves with one more peer in every tenant"),
        ("phase_local_plug", "both halves after a container is plugged here"),
    ];
    let rows: Vec<Vec<String>> = phases
        .iter()
        .map(|(f, what)| {
            let ir = ir_of(f);
            let wall =
                native.get(*f).map(|v| stats(v).p50).unwrap_or_else(|| panic!("the example printed no time for {f}"));
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
