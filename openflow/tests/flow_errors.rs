//! Bundles, errors and flow_mod commands against a REAL ovs-vswitchd: an atomic bundle with a
//! refused flow_mod names it and leaves the switch as it was; errors outside a bundle name the
//! flow_mod and arrive before the barrier; cookies select flows to dump, modify and delete.

mod common;

use common::*;
use openflow_client::{
    Action, ClientError, Flow, FlowMod, FlowStatsRequest, Instructions, Match, OFPFF_CHECK_OVERLAP, OFPTT_ALL,
};

fn flow(table: u8, prio: u16, in_port: u32, out: u32, cookie: u64) -> Flow {
    Flow::builder(table, prio)
        .cookie(cookie)
        .matching(Match::builder().in_port(in_port).build().unwrap())
        .action(Action::output(out))
        .build()
        .unwrap()
}

/// A flow the client's checks accept but the switch refuses: output to a port number in the
/// range OpenFlow 1.3 reserves (0xffffff00..0xfffffff7); OVS answers OFPBAC_BAD_OUT_PORT when
/// it decodes the flow_mod. (goto_table:255, which OVS 3.1 accepts, would not do; a goto to an
/// earlier table the client refuses itself.)
fn bad_port(table: u8, prio: u16, cookie: u64) -> Flow {
    flow(table, prio, 9, 0xffff_ff01, cookie)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_flow_mod_fails_the_whole_bundle_and_is_named() {
    for versions in [None, Some(of13_only())] {
        let host = Host::start();
        flow_lab_bridge(&host, "br-b", &[]);
        let conn = match versions {
            None => host.connect("br-b").await,
            Some(o) => host.connect_with("br-b", o).await,
        };
        let before = flow(0, 1, 1, 10, 0xaa);
        within("flow_mods", conn.flow_mods(&[FlowMod::add(before.clone())])).await.unwrap();

        // Refused as it is added (the switch checks each message on add): stage "add".
        let mods = vec![
            FlowMod::add(flow(0, 10, 1, 10, 0xbb)),
            FlowMod::add(flow(0, 10, 2, 20, 0xbb)),
            FlowMod::add(bad_port(0, 10, 0xbb)),
            FlowMod::add(flow(0, 10, 3, 1, 0xbb)),
        ];
        let e = within("bundle", conn.bundle(&mods)).await.unwrap_err();
        let ClientError::Bundle(b) = &e else { panic!("want a bundle failure, got {e:?}") };
        assert_eq!(b.index, Some(2), "{e}");
        assert_eq!(b.stage, "add", "{e}");
        assert_eq!(b.error.code_name(), Some("OFPBAC_BAD_OUT_PORT"), "{e}");
        assert_eq!(b.error.type_name(), "OFPET_BAD_ACTION", "{e}");
        assert!(e.to_string().contains("flow_mod 2 (add table=0,priority=10,cookie=0xbb,in_port=9"), "{e}");
        assert_eq!(dump_sorted(&conn, &FlowStatsRequest::all()).await, vec![before.clone()], "nothing of the bundle");

        // Refused when the bundle is applied (an overlap found at commit): stage "commit".
        let overlapping = Flow::builder(0, 10)
            .cookie(0xcc)
            .matching(Match::builder().ip().build().unwrap())
            .action(Action::output(20))
            .build()
            .unwrap();
        let mods = vec![
            FlowMod::add(flow(0, 10, 1, 10, 0xcc)),
            FlowMod::add(flow(0, 20, 2, 10, 0xcc)),
            FlowMod::add(overlapping).flags(OFPFF_CHECK_OVERLAP),
            FlowMod::add(flow(0, 30, 3, 10, 0xcc)),
        ];
        let e = within("bundle", conn.bundle(&mods)).await.unwrap_err();
        let ClientError::Bundle(b) = &e else { panic!("want a bundle failure, got {e:?}") };
        assert_eq!((b.stage, b.index), ("commit", Some(2)), "{e}");
        assert_eq!(b.error.code_name(), Some("OFPFMFC_OVERLAP"), "{e}");
        assert_eq!(dump_sorted(&conn, &FlowStatsRequest::all()).await, vec![before.clone()], "nothing of the bundle");

        // The session is still good for the next bundle.
        within("bundle", conn.bundle(&[FlowMod::add(flow(0, 40, 4, 10, 0xdd))])).await.expect("next bundle");
        assert_eq!(dump_sorted(&conn, &FlowStatsRequest::all()).await.len(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_flow_mods_outside_a_bundle_are_named_before_the_barrier() {
    let host = Host::start();
    flow_lab_bridge(&host, "br-e", &[]);
    let conn = host.connect("br-e").await;
    let mods = vec![
        FlowMod::add(flow(1, 10, 1, 10, 1)),
        FlowMod::add(bad_port(1, 10, 1)),
        FlowMod::add(flow(1, 10, 2, 10, 1)),
    ];
    let e = within("flow_mods", conn.flow_mods(&mods)).await.unwrap_err();
    let ClientError::Rejected { index, error, request } = &e else { panic!("want Rejected, got {e:?}") };
    assert_eq!(*index, Some(1), "{e}");
    assert_eq!(error.code_name(), Some("OFPBAC_BAD_OUT_PORT"));
    assert!(request.starts_with("flow_mod 1 (add table=1,priority=10"), "{request}");
    // Not a bundle: the others were applied.
    assert_eq!(dump_sorted(&conn, &FlowStatsRequest::all()).await.len(), 2);

    // The client refuses what it can tell OVS would refuse, and sends nothing.
    let mut backwards = flow(3, 1, 1, 1, 1);
    backwards.instructions = Instructions { goto_table: Some(2), ..Instructions::default() };
    let e = within("flow_mods", conn.flow_mods(&[FlowMod::add(backwards)])).await.unwrap_err();
    assert!(matches!(e, ClientError::Invalid { index: 0, .. }), "{e:?}");
    assert!(e.to_string().contains("goto_table:2 from table 3"), "{e}");
    let mut no_prereq = flow(3, 1, 1, 1, 1);
    no_prereq.instructions.apply = vec![Action::set_field(openflow_client::Field::ArpOp, 2)];
    let e = within("flow_mods", conn.flow_mods(&[FlowMod::add(no_prereq)])).await.unwrap_err();
    assert!(e.to_string().contains("needs eth_type=0x0806 (arp)"), "{e}");
    assert_eq!(dump_sorted(&conn, &FlowStatsRequest::table(3)).await, vec![]);

    // The session survives the errors.
    within("echo", conn.echo()).await.expect("echo");
    within("barrier", conn.barrier()).await.expect("barrier");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_select_what_is_dumped_modified_and_deleted() {
    let host = Host::start();
    flow_lab_bridge(&host, "br-c", &[]);
    let conn = host.connect("br-c").await;
    // Three owners by the cookie's high 16 bits; two tables.
    let mut all = Vec::new();
    for owner in 1..=3u64 {
        for (i, table) in [(1u32, 0u8), (2, 0), (3, 1)] {
            all.push(flow(table, 10, owner as u32 * 10 + i, 10, (owner << 48) | u64::from(i)));
        }
    }
    let mods: Vec<FlowMod> = all.iter().cloned().map(FlowMod::add).collect();
    within("bundle", conn.bundle(&mods)).await.unwrap();
    let owner = |o: u64| FlowStatsRequest::all().cookie(o << 48, 0xffff << 48);
    let mut of2: Vec<Flow> = all.iter().filter(|f| f.cookie >> 48 == 2).cloned().collect();
    of2.sort();
    assert_eq!(dump_sorted(&conn, &owner(2)).await, of2);
    let in_table1 = FlowStatsRequest { table: 1, ..owner(2) };
    assert_eq!(dump_sorted(&conn, &in_table1).await, vec![of2[2].clone()]);

    // modify_strict: new actions for one key; the cookie stays (OpenFlow 1.3 modify).
    let mut changed = of2[0].clone();
    changed.instructions.apply = vec![Action::output(20)];
    let sent_cookie = changed.cookie;
    changed.cookie = 0x1234;
    within("modify", conn.flow_mods(&[FlowMod::modify_strict(changed.clone())])).await.unwrap();
    changed.cookie = sent_cookie;
    assert!(dump_sorted(&conn, &owner(2)).await.contains(&changed));

    // modify (not strict): every flow of owner 3 in table 0.
    let mut template = flow(0, 0, 0, 1, 3 << 48);
    template.matching = Match::new();
    within("modify", conn.flow_mods(&[FlowMod::modify(template, 0xffff << 48)])).await.unwrap();
    let of3 = dump_sorted(&conn, &owner(3)).await;
    assert_eq!(of3.iter().filter(|f| f.instructions.apply == vec![Action::output(1)]).count(), 2, "{of3:?}");

    // delete by exact cookie in one table, then every flow of an owner in every table.
    let one = all[0].cookie;
    within("delete", conn.flow_mods(&[FlowMod::delete_by_cookie(0, one, u64::MAX)])).await.unwrap();
    assert!(dump_sorted(&conn, &owner(1)).await.iter().all(|f| f.cookie != one));
    within("delete", conn.flow_mods(&[FlowMod::delete_by_cookie(OFPTT_ALL, 2 << 48, 0xffff << 48)])).await.unwrap();
    assert_eq!(dump_sorted(&conn, &owner(2)).await, vec![]);
    assert_eq!(dump_sorted(&conn, &owner(1)).await.len(), 2);
    // delete_strict of one key, and a non-strict delete by match.
    let k = all[1].key();
    within("delete", conn.flow_mods(&[FlowMod::delete_strict(&k)])).await.unwrap();
    assert_eq!(dump_sorted(&conn, &owner(1)).await.len(), 1);
    within("delete", conn.flow_mods(&[FlowMod::delete(OFPTT_ALL, Match::builder().in_port(13).build().unwrap())]))
        .await
        .unwrap();
    assert!(dump_sorted(&conn, &FlowStatsRequest::all())
        .await
        .iter()
        .all(|f| f.matching.exact(openflow_client::Field::InPort) != Some(13)));

    // diff_flows: the reconciler's change set, applied as one bundle, makes the dump equal.
    let desired: Vec<Flow> = (1..=4).map(|i| flow(2, 5, i, 10, 9 << 48)).collect();
    let actual = dump_sorted(&conn, &owner(9)).await;
    let change = openflow_client::diff_flows(&desired, &actual);
    assert_eq!(change.len(), 4);
    within("bundle", conn.bundle(&change)).await.unwrap();
    let mut d = desired.clone();
    d.sort();
    assert_eq!(dump_sorted(&conn, &owner(9)).await, d);
    assert!(openflow_client::diff_flows(&desired, &dump_sorted(&conn, &owner(9)).await).is_empty());
}
