//! `bundle_iter` against a REAL ovs-vswitchd: flow_mods produced lazily, a refusal deep in a
//! large bundle named by index and shown (decoded back from the bytes sent), an invalid
//! flow_mod met half-way through, and a bundle the switch dropped for idleness: each leaves the
//! switch as it was.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use openflow_client::{Action, ClientError, Field, Flow, FlowMod, FlowStatsRequest, Instructions, Match};

fn bridge(host: &Host, name: &str) -> openflow_client::Target {
    host.bridge(name, &[]);
    host.patch_port(name, &format!("{name}-p"), &format!("{name}-q"), 1);
    host.target(name)
}

/// Flow `i` of a long run: distinct keys in table 1.
fn numbered(i: usize) -> Flow {
    Flow::builder(1, 10)
        .cookie(0x5eed)
        .matching(Match::builder().in_port(1).metadata(i as u64).build().unwrap())
        .actions([Action::set_field(Field::Reg(0), 7), Action::output(1)])
        .build()
        .unwrap()
}

/// Output to a port number OpenFlow reserves: the client accepts it, OVS refuses it on add
/// (OFPBAC_BAD_OUT_PORT).
fn refused(i: usize) -> Flow {
    let mut f = numbered(i);
    f.instructions.apply = vec![Action::output(0xffff_ff01)];
    f
}

#[test]
fn the_bundle_futures_are_send() {
    fn send<T: Send>(_: T) {}
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let _guard = rt.enter();
    let sw = openflow_client::Switch::start(openflow_client::SwitchOptions::new(openflow_client::Target::Unix(
        "/nonexistent".into(),
    )));
    send(sw.bundle_iter((0..3).map(numbered).map(FlowMod::add)));
    let held: Vec<FlowMod> = (0..3).map(numbered).map(FlowMod::add).collect();
    send(sw.bundle_iter(held.iter().filter(|m| m.flow.priority == 10)));
    send(sw.bundle(&[]));
    send(sw.dump_cookies(&FlowStatsRequest::all()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_deep_in_a_streamed_bundle_is_named_shown_and_stops_the_stream() {
    let host = Host::start();
    bridge(&host, "br-deep");
    let conn = host.connect("br-deep").await;
    // 1,000,000 flow_mods on offer, the one at 15,000 refused: the switch says so while the
    // rest are still being produced, and the client stops drawing them.
    let drawn = AtomicUsize::new(0);
    let mods = (0..1_000_000usize).map(|i| {
        drawn.fetch_add(1, Ordering::Relaxed);
        FlowMod::add(if i == 15_000 { refused(i) } else { numbered(i) })
    });
    let e = within("bundle", conn.bundle_iter(mods)).await.unwrap_err();
    let ClientError::Bundle(b) = &e else { panic!("want a bundle failure, got {e:?}") };
    assert_eq!((b.stage, b.index), ("add", Some(15_000)), "{e}");
    assert_eq!(b.error.code_name(), Some("OFPBAC_BAD_OUT_PORT"), "{e}");
    let shown = FlowMod::add(refused(15_000)).to_string();
    assert_eq!(b.flow_mod.as_deref(), Some(shown.as_str()));
    assert!(e.to_string().contains(&format!("flow_mod 15000 ({shown}) refused")), "{e}");
    assert!(shown.contains("metadata=0x3a98"), "{shown}");
    let drawn = drawn.load(Ordering::Relaxed);
    assert!(drawn < 1_000_000, "the iterator was drawn to its end ({drawn})");
    eprintln!("refusal of flow_mod 15,000 seen after {drawn} were produced");
    assert_eq!(dump_sorted(&conn, &FlowStatsRequest::all()).await, vec![], "nothing of the bundle applied");

    // Refused at commit, deep in: an overlap check on flow_mod 30,000 of 40,000.
    let overlapping = Flow::builder(1, 10)
        .cookie(0x0c)
        .matching(Match::builder().in_port(1).metadata_masked(0, 0xf000_0000).build().unwrap())
        .action(Action::output(1))
        .build()
        .unwrap();
    let mods = (0..40_000usize).map(|i| match i {
        30_000 => FlowMod::add(overlapping.clone()).flags(openflow_client::OFPFF_CHECK_OVERLAP),
        _ => FlowMod::add(numbered(i)),
    });
    let e = within("bundle", conn.bundle_iter(mods)).await.unwrap_err();
    let ClientError::Bundle(b) = &e else { panic!("want a bundle failure, got {e:?}") };
    assert_eq!((b.stage, b.index, b.len), ("commit", Some(30_000), 40_000), "{e}");
    assert_eq!(b.error.code_name(), Some("OFPFMFC_OVERLAP"), "{e}");
    let shown = FlowMod::add(overlapping).to_string();
    assert_eq!(b.flow_mod.as_deref(), Some(shown.as_str()));
    assert!(e.to_string().contains(&format!("flow_mod 30000 ({shown}) refused")), "{e}");
    assert_eq!(dump_sorted(&conn, &FlowStatsRequest::all()).await, vec![], "nothing of the bundle applied");

    // The session goes on: the same flows without the bad one commit.
    within("bundle", conn.bundle_iter((0..40_000).map(numbered).map(FlowMod::add))).await.expect("bundle");
    assert_eq!(within("cookies", conn.dump_cookies(&FlowStatsRequest::all())).await.unwrap().len(), 40_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_flow_mod_half_way_discards_what_was_already_sent() {
    let host = Host::start();
    bridge(&host, "br-inv");
    let conn = host.connect("br-inv").await;
    within("bundle", conn.bundle_iter([FlowMod::add(numbered(1_000_000))])).await.unwrap();
    // 5,000 adds (several chunks, already on their way to the switch), then a goto backwards.
    let mut backwards = numbered(5_000);
    backwards.instructions = Instructions { goto_table: Some(0), ..Instructions::default() };
    let mods = (0..5_000).map(numbered).chain([backwards]).chain((5_001..6_000).map(numbered)).map(FlowMod::add);
    let e = within("bundle", conn.bundle_iter(mods)).await.unwrap_err();
    assert!(matches!(e, ClientError::Invalid { index: 5_000, .. }), "{e:?}");
    assert!(e.to_string().contains("goto_table:0 from table 1"), "{e}");
    assert_eq!(dump_sorted(&conn, &FlowStatsRequest::all()).await, vec![numbered(1_000_000)], "the switch as it was");
    within("bundle", conn.bundle_iter((0..10).map(numbered).map(FlowMod::add))).await.expect("next bundle");
    assert_eq!(dump_sorted(&conn, &FlowStatsRequest::all()).await.len(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_the_switch_dropped_for_idleness_fails_instead_of_committing_the_rest() {
    let host = Host::start();
    bridge(&host, "br-idle");
    host.db.vsctl_wait(&["set", "Open_vSwitch", ".", "other_config:bundle-idle-timeout=1"]);
    let conn = host.connect("br-idle").await;
    // 3,000 adds reach the switch, then the producer stalls past the idle timeout: the switch
    // drops the bundle, and the adds after the stall would open a new one under the same id.
    let mods = (0..3_100).map(|i| {
        if i == 3_000 {
            std::thread::sleep(Duration::from_secs(3));
        }
        FlowMod::add(numbered(i))
    });
    let e = within("bundle", conn.bundle_iter(mods)).await.unwrap_err();
    let ClientError::Bundle(b) = &e else { panic!("want a bundle failure, got {e:?}") };
    assert_eq!((b.stage, b.index), ("add", None), "{e}");
    assert_eq!(b.error.code_name(), Some("OFPBFC_TIMEOUT"), "{e}");
    assert!(e.to_string().contains("other_config:bundle-idle-timeout"), "says what to change: {e}");
    assert_eq!(dump_sorted(&conn, &FlowStatsRequest::all()).await, vec![], "neither part applied");
    within("bundle", conn.bundle_iter((0..10).map(numbered).map(FlowMod::add))).await.expect("next bundle");
    assert_eq!(dump_sorted(&conn, &FlowStatsRequest::all()).await.len(), 10);
}
