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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openflow13_only_bridge_takes_onf_bundles() {
    let host = Host::start();
    flow_lab_bridge(&host, "br13", &["protocols=OpenFlow13"]);
    // Offering 1.3 and 1.4 to a 1.3-only bridge negotiates 1.3; bundles go as ONF EXT-230.
    let conn = host.connect("br13").await;
    assert_eq!(conn.version(), openflow_client::OFP13_VERSION);
    let flows = flow_lab(2, 0x13);
    let mods: Vec<FlowMod> = flows.iter().map(|(f, _)| FlowMod::add(f.clone())).collect();
    within("bundle", conn.bundle(&mods)).await.expect("OpenFlow 1.3 bundle");
    let mut want: Vec<String> = flows.iter().map(|(_, t)| t.clone()).collect();
    want.sort();
    assert_eq!(host.dump_text("br13"), want);
    let mut sent: Vec<_> = flows.into_iter().map(|(f, _)| f).collect();
    sent.sort();
    assert_same_flows(&dump_sorted(&conn, &FlowStatsRequest::all()).await, &sent);
    // And a client that offers only 1.3 gets it from a bridge that also speaks 1.4.
    flow_lab_bridge(&host, "br14", &[]);
    let c13 = host.connect_with("br14", of13_only()).await;
    assert_eq!(c13.version(), openflow_client::OFP13_VERSION);
    within("bundle", c13.bundle(&mods)).await.expect("1.3 bundle on a 1.4 bridge");
    assert_same_flows(&dump_sorted(&c13, &FlowStatsRequest::all()).await, &sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_without_a_common_version_is_a_handshake_error() {
    let host = Host::start();
    host.bridge("br10", &["protocols=OpenFlow10"]);
    let t = host.target("br10");
    let e = within("connect", openflow_client::Connection::connect(&t, Default::default())).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, openflow_client::ClientError::Handshake { .. }), "{e:?}");
    assert!(text.contains("OpenFlow13"), "says what to enable: {text}");
}
