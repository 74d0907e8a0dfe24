//! openflow-client against a REAL ovs-vswitchd (Debian's openvswitch-switch 3.1, userspace
//! datapath), one private ovsdb-server + ovs-vswitchd per test in a namespace of its own
//! (testbed). Nothing is skipped: without root or OVS the fixtures panic with what to install.

mod common;

use common::*;
use openflow_client::{FlowMod, FlowStatsRequest, OFP14_VERSION};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_lab_pipeline_installs_and_reads_back() {
    let host = Host::start();
    flow_lab_bridge(&host, "br-tun", &[]);
    let conn = host.connect("br-tun").await;
    assert_eq!(conn.version(), OFP14_VERSION, "OVS 3.1 speaks 1.4; the client prefers it");
    let flows = flow_lab(1, 0x5a);
    let mods: Vec<FlowMod> = flows.iter().map(|(f, _)| FlowMod::add(f.clone())).collect();
    within("bundle", conn.bundle(&mods)).await.expect("flow-lab bundle");
    let mut want: Vec<String> = flows.iter().map(|(_, t)| t.clone()).collect();
    want.sort();
    assert_eq!(host.dump_text("br-tun"), want);
    let mut sent: Vec<_> = flows.into_iter().map(|(f, _)| f).collect();
    sent.sort();
    assert_same_flows(&dump_sorted(&conn, &FlowStatsRequest::all()).await, &sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shape_installs_as_ovs_ofctl_prints_it_and_reads_back_equal() {
    let host = Host::start();
    flow_lab_bridge(&host, "br-s", &[]);
    let conn = host.connect("br-s").await;
    let flows = shapes(0x77);
    let mods: Vec<FlowMod> = flows.iter().map(|(f, _)| FlowMod::add(f.clone())).collect();
    within("bundle", conn.bundle(&mods)).await.expect("shapes bundle");
    let mut want: Vec<String> = flows.iter().map(|(_, t)| t.clone()).collect();
    want.sort();
    let got = host.dump_text("br-s");
    for (g, w) in got.iter().zip(&want) {
        if g != w {
            eprintln!("got:  {g}\nwant: {w}\n");
        }
    }
    assert_eq!(got, want);
    let mut sent: Vec<_> = flows.into_iter().map(|(f, _)| f).collect();
    sent.sort();
    assert_same_flows(&dump_sorted(&conn, &FlowStatsRequest::all()).await, &sent);
}
