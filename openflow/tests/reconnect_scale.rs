//! A reconnecting [`Switch`] across ovs-vswitchd restarts, and 40,000 flows (1,000 peers x 20
//! tenants, as `shared/lab/scale/flow-scale.sh`) in one bundle, read back whole across
//! multipart replies. Real ovs-vswitchd, as everywhere in these tests.

mod common;

use std::time::{Duration, Instant};

use common::*;
use openflow_client::{ClientError, Flow, FlowMod, FlowStatsRequest, Switch, SwitchOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_reconnects_after_vswitchd_restarts_and_the_epoch_advances() {
    let host = Host::start();
    flow_lab_bridge(&host, "br-r", &[]);
    let mut opts = SwitchOptions::new(host.target("br-r"));
    opts.backoff_min = Duration::from_millis(50);
    opts.backoff_max = Duration::from_millis(500);
    opts.connection.request_timeout = Duration::from_secs(5);
    opts.connection.inactivity_probe = Some(Duration::from_secs(1));
    let sw = Switch::start(opts);
    let mut state = sw.state();
    assert_eq!(within("connect", sw.wait_connected(T)).await.unwrap(), 1);
    let flows: Vec<Flow> = flow_lab(1, 7).into_iter().map(|(f, _)| f).collect();
    let mods: Vec<FlowMod> = flows.iter().cloned().map(FlowMod::add).collect();
    within("bundle", sw.bundle(&mods)).await.unwrap();

    tokio::task::block_in_place(|| host.vs.kill());
    within("disconnect seen", state.wait_for(|s| !s.connected)).await.unwrap();
    // While it is down, requests fail at once with a typed error, never hang.
    let started = Instant::now();
    let e = sw.dump_flows(&FlowStatsRequest::all()).await.unwrap_err();
    assert!(matches!(e, ClientError::NotConnected { .. }), "{e:?}");
    assert!(e.is_connection_lost());
    let e = sw.bundle(&mods).await.unwrap_err();
    assert!(matches!(e, ClientError::NotConnected { .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_millis(100), "fail fast: {:?}", started.elapsed());

    // ovs-vswitchd comes back (same database: the bridge is re-created, its flows are not).
    tokio::task::block_in_place(|| host.vs.restart());
    let s = *within("reconnect", state.wait_for(|s| s.connected)).await.unwrap();
    assert_eq!(s.epoch, 2, "a new session is a new epoch");
    assert_eq!(sw.epoch(), 2);
    // The new epoch tells the caller to reinstall: the restarted switch has no flows.
    assert_eq!(within("dump", sw.flows(&FlowStatsRequest::all())).await.unwrap(), vec![]);
    within("bundle", sw.bundle(&mods)).await.unwrap();
    let mut got = within("dump", sw.flows(&FlowStatsRequest::all())).await.unwrap();
    got.sort();
    let mut want = flows.clone();
    want.sort();
    assert_same_flows(&got, &want);

    // A second restart: epoch 3.
    tokio::task::block_in_place(|| host.vs.restart());
    within("epoch 3", state.wait_for(|s| s.connected && s.epoch == 3)).await.unwrap();
    within("echo", sw.connection().unwrap().echo()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_thousand_flows_in_one_bundle_read_back_whole() {
    let host = Host::start();
    host.bridge("br-big", &[]);
    host.patch_port("br-big", "big-p", "big-q", 1);
    for t in 1..=20u32 {
        host.vxlan_port("br-big", &format!("big-t{t}"), 100 + t, 10 + t);
    }
    let conn = host.connect("br-big").await;
    // A flood flow of 1,000 peers is ~32 KB of actions, within one message; the ARP and
    // unicast flows are 40,000.
    let mut flows = scale_flows(1000, 20, 0xbeef);
    assert_eq!(flows.len(), 40_041);
    let mods: Vec<FlowMod> = flows.iter().cloned().map(FlowMod::add).collect();
    let started = Instant::now();
    within("bundle of 40,041", conn.bundle(&mods)).await.expect("big bundle");
    let installed = started.elapsed();
    let started = Instant::now();
    let mut got = within("dump", conn.flows(&FlowStatsRequest::all().cookie(0xbeef, u64::MAX))).await.unwrap();
    let dumped = started.elapsed();
    eprintln!("40,041 flows: bundle {installed:?}, dump {dumped:?}");
    got.sort();
    flows.sort();
    assert_eq!(got.len(), flows.len());
    assert!(got == flows, "the dump differs from the flows sent");
    let n = host.ofctl(&["dump-aggregate", "{mgmt:br-big}"]);
    assert!(n.contains("flow_count=40041"), "{n}");
}
