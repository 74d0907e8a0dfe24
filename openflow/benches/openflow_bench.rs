//! openflow-client against a private ovs-vswitchd (testbed, userspace datapath), and the same
//! work through `ovs-ofctl`.
//!
//! `cargo bench -p openflow-client --bench openflow_bench` prints a markdown table:
//! - encoding 40,041 flow_mods (flow-scale.sh's 1,000 peers x 20 tenants) as bundle adds;
//! - installing them as ONE bundle (open, adds, barrier, commit) on a fresh bridge, and the
//!   same flows through `ovs-ofctl --bundle add-flows`;
//! - dumping them back (multipart replies gathered and decoded) and `ovs-ofctl dump-flows`;
//! - `diff_flows` of the 40,041 desired flows against the dump (nothing to do);
//! - a peer join (20 unicast + 20 ARP flows and 20 flood flows replaced) as one bundle:
//!   p50 / p99 over `BENCH_JOINS` joins (default 100);
//! - the agent's full pipeline (60,041 flows) installed with `bundle_iter` from a lazy
//!   iterator and read back with `dump_cookies`, against `bundle` over a `Vec` and
//!   `dump_flows`: time and RSS growth, each in a fresh child process (`support/memory.rs`),
//!   and the sizes of the flow types.
//!
//! Needs root and OVS (the testbed fixtures say what to install).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/memory.rs"]
mod memory;

use std::time::{Duration, Instant};

use openflow_client::{diff_flows, FlowMod, FlowStatsRequest, OFP14_VERSION};

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn row(rows: &mut Vec<(String, String)>, what: impl Into<String>, value: impl Into<String>) {
    let (w, v) = (what.into(), value.into());
    eprintln!("  {w}: {v}");
    rows.push((w, v));
}

/// flow-scale.sh's flows in ovs-ofctl's syntax (its own script's lines, with the cookie), for
/// the comparison; the bench checks that both ways install the same flows.
fn ofctl_text(peers: u32, tenants: u32, cookie: u64) -> String {
    let ip = |j: u32| format!("198.18.{}.{}", (j + 2) / 250, (j + 2) % 250 + 1);
    let mac = |t: u32, j: u32| format!("02:{t:02x}:{:02x}:{:02x}:00:01", j >> 8, j & 255);
    let cip = |j: u32| format!("10.{}.{}.1", j >> 8, j & 255);
    let mut s = String::new();
    for t in 1..=tenants {
        let port = 10 + t;
        let mut flood = String::new();
        for j in 0..peers {
            let (m, c) = (mac(t, j), cip(j));
            s += &format!("cookie={cookie:#x},table=1,priority=20,dl_vlan={t},arp,arp_op=1,arp_tpa={c},actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:{m}->eth_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:{m}->arp_sha,set_field:{c}->arp_spa,IN_PORT\n");
            s += &format!("cookie={cookie:#x},table=1,priority=10,dl_vlan={t},dl_dst={m},actions=pop_vlan,set_field:{}->tun_dst,output:{port}\n", ip(j));
            flood += &format!(",set_field:{}->tun_dst,output:{port}", ip(j));
        }
        s += &format!("cookie={cookie:#x},table=1,priority=5,dl_vlan={t},actions=pop_vlan{flood}\n");
        s += &format!("cookie={cookie:#x},table=0,priority=10,in_port={port},actions=mod_vlan_vid:{t},output:1\n");
    }
    s += &format!("cookie={cookie:#x},table=0,priority=10,in_port=1,actions=resubmit(,1)\n");
    s
}

/// A peer joining every tenant of a bridge that holds `peers` peers: its ARP and unicast flows
/// added, each tenant's flood flow replaced by one with an output more (same key).
fn join(peers: u32) -> Vec<FlowMod> {
    let v = common::scale_flows(peers + 1, 20, 0xbe);
    let per = 2 * (peers as usize + 1) + 2;
    let new = 2 * peers as usize;
    (0..20)
        .flat_map(|t| [&v[t * per + new], &v[t * per + new + 1], &v[t * per + new + 2]])
        .cloned()
        .map(FlowMod::add)
        .collect()
}

fn main() {
    if let Ok(name) = std::env::var(memory::CHILD_ENV) {
        return memory::child(&name);
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("openflow_bench: benchmark not run (use `cargo bench -p openflow-client --bench openflow_bench`)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run());
}

async fn run() {
    let mut rows = Vec::new();
    let flows = common::scale_flows(1000, 20, 0xbe);
    let n = flows.len();
    let mods: Vec<FlowMod> = flows.iter().cloned().map(FlowMod::add).collect();

    let started = Instant::now();
    let mut bytes = 0usize;
    let mut buf = Vec::with_capacity(300);
    for (i, m) in mods.iter().enumerate() {
        buf.clear();
        m.encode(OFP14_VERSION, i as u32, &mut buf).unwrap();
        let mut add = Vec::with_capacity(buf.len() + 16);
        openflow_client::encode_bundle_add(OFP14_VERSION, i as u32, 1, 3, &buf, &mut add).unwrap();
        bytes += add.len();
    }
    row(
        &mut rows,
        format!("encode {n} flow_mods as bundle adds ({:.1} MB)", bytes as f64 / 1e6),
        ms(started.elapsed()),
    );

    let host = common::Host::start();
    let bridge = |name: &str| {
        host.bridge(name, &[]);
        host.patch_port(name, &format!("{name}-p"), &format!("{name}-q"), 1);
        for t in 1..=20u32 {
            host.vxlan_port(name, &format!("{name}{t}"), 100 + t, 10 + t);
        }
    };
    bridge("bb1");
    let conn = host.connect("bb1").await;
    let started = Instant::now();
    conn.bundle(&mods).await.expect("bundle");
    row(&mut rows, format!("openflow-client: {n} flows in ONE bundle to ovs-vswitchd"), ms(started.elapsed()));

    let started = Instant::now();
    let dump = conn.flows(&FlowStatsRequest::all().cookie(0xbe, u64::MAX)).await.expect("dump");
    row(&mut rows, format!("openflow-client: dump {n} flows (multipart, decoded)"), ms(started.elapsed()));
    assert_eq!(dump.len(), n);

    let started = Instant::now();
    let change = diff_flows(&flows, &dump);
    row(&mut rows, format!("diff_flows: {n} desired against the {n} dumped"), ms(started.elapsed()));
    assert!(change.is_empty(), "{} differences", change.len());

    // Peers join one after the other, each its own bundle, as the agent would on each event.
    let joins: u32 = std::env::var("BENCH_JOINS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let mut times = Vec::with_capacity(joins as usize);
    for k in 0..joins {
        let mods = join(1000 + k);
        let started = Instant::now();
        conn.bundle(&mods).await.expect("join bundle");
        times.push(started.elapsed());
    }
    let joins = joins as usize;
    times.sort();
    row(
        &mut rows,
        format!("peer join: 40 flows added, 20 flood flows replaced, one bundle: p50 / p99 of {joins}"),
        format!("{} / {}", ms(times[joins / 2]), ms(times[joins * 99 / 100])),
    );

    // The same through ovs-ofctl, on a fresh bridge.
    bridge("bb2");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), ofctl_text(1000, 20, 0xbe)).unwrap();
    let path = file.path().to_str().unwrap().to_owned();
    let started = Instant::now();
    tokio::task::block_in_place(|| host.ofctl(&["--bundle", "add-flows", "{mgmt:bb2}", &path]));
    row(&mut rows, format!("ovs-ofctl --bundle add-flows: {n} flows"), ms(started.elapsed()));
    let started = Instant::now();
    let text = tokio::task::block_in_place(|| host.ofctl(&["dump-flows", "{mgmt:bb2}"]));
    row(&mut rows, format!("ovs-ofctl dump-flows: {n} flows (text)"), ms(started.elapsed()));
    assert_eq!(text.lines().filter(|l| l.contains("priority=")).count(), n);
    let mut via_ofctl = conn_flows(&host, "bb2").await;
    via_ofctl.sort();
    let mut ours = flows.clone();
    ours.sort();
    assert!(via_ofctl == ours, "ovs-ofctl's flows differ from the client's");

    println!("\n| openflow-client benchmark (ovs-vswitchd 3.1, netdev) | time |\n|---|---|");
    for (w, v) in rows {
        println!("| {w} | {v} |");
    }

    tokio::task::block_in_place(|| memory_table(&host));
}

/// The pipeline installed and read back each way, each in its own process.
fn memory_table(host: &common::Host) {
    let mib = |kb: &str| format!("{:.1} MiB", kb.parse::<f64>().unwrap() / 1024.0);
    let mut bytes = 0usize;
    let mut inner = Vec::new();
    let mut add = Vec::new();
    for (i, f) in common::pipeline_flows(1000, 20, memory::PREFIX).enumerate() {
        inner.clear();
        add.clear();
        FlowMod::add(f).encode(OFP14_VERSION, i as u32, &mut inner).unwrap();
        openflow_client::encode_bundle_add(OFP14_VERSION, i as u32, 1, 3, &inner, &mut add).unwrap();
        bytes += add.len();
    }
    let mut out = format!(
        "\n| 60,041 flows (agent pipeline, {:.1} MiB as bundle adds), fresh process each | time | RSS growth (peak) |\n|---|---|---|\n",
        bytes as f64 / (1 << 20) as f64
    );
    let fill = |name: &str| {
        host.bridge(name, &[]);
        host.patch_port(name, &format!("{name}-p"), &format!("{name}-q"), 1);
        host.vs.mgmt_socket(name)
    };
    for (scenario, bridge, install, dump) in [
        ("stream", "bm-s", "bundle_iter, lazy iterator", "then dump_cookies, same process"),
        ("slice", "bm-v", "bundle(&Vec<FlowMod>) (Vec built first)", "then dump_flows, same process"),
    ] {
        let r = memory::in_child(scenario, Some(&fill(bridge)));
        eprintln!("  {scenario}: {r:?}");
        out += &format!("| install: {install} | {} ms | {} |\n", r["install_ms"], mib(&r["install_peak_kb"]));
        out += &format!("| {dump} | {} ms | {} (whole run) |\n", r["dump_ms"], mib(&r["peak_kb"]));
    }
    let socket = host.vs.mgmt_socket("bm-s");
    for (scenario, what) in
        [("cookies", "dump_cookies alone (median of 5)"), ("flows", "dump_flows alone (median of 5)")]
    {
        let r = memory::in_child(scenario, Some(&socket));
        eprintln!("  {scenario}: {r:?}");
        out += &format!("| {what} | {} ms | {} |\n", r["dump_ms"], mib(&r["peak_kb"]));
    }
    let s = memory::in_child("sizes", None);
    eprintln!("  sizes: {s:?}");
    out += &format!(
        "\nsize_of: Flow {} B, Match {} B, Action {} B, Instructions {} B, FlowMod {} B. A flow with a 4-field \
         match and 5 actions: {} B in all, {} B of it on the heap ({} B for the match).\n",
        s["flow"],
        s["match"],
        s["action"],
        s["instructions"],
        s["flow_mod"],
        s["flow_total"],
        s["flow_heap"],
        s["match_heap"]
    );
    println!("{out}");
}

async fn conn_flows(host: &common::Host, bridge: &str) -> Vec<openflow_client::Flow> {
    host.connect(bridge).await.flows(&FlowStatsRequest::all()).await.expect("dump")
}
