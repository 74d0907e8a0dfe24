//! The agent's reconcile loop at its full scale against a REAL ovs-vswitchd: 60,041 flows
//! (1,000 peers x 20 tenants) streamed lazily into one bundle, each flow marked by its cookie
//! (a 16-bit prefix and a hash of its content), next to flows other writers installed; then
//! read back as cookies alone, stale ones deleted by exact cookie and missing ones added.

mod common;

use std::collections::BTreeSet;
use std::time::Instant;

use common::*;
use openflow_client::{Connection, FlowCookie, FlowMod, FlowStatsRequest};

const AGENT: u16 = 0xa9e7;

fn agent_cookies() -> FlowStatsRequest {
    FlowStatsRequest::all().cookie(u64::from(AGENT) << 48, PREFIX_MASK)
}

fn key(f: &openflow_client::Flow) -> FlowCookie {
    FlowCookie { table: f.table, priority: f.priority, cookie: f.cookie }
}

async fn cookies(conn: &Connection, req: &FlowStatsRequest) -> Vec<FlowCookie> {
    let mut v = within("dump cookies", conn.dump_cookies(req)).await.expect("dump cookies");
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_thousand_flows_streamed_then_reconciled_by_cookie_beside_foreign_flows() {
    let host = Host::start();
    host.bridge("br-ck", &[]);
    host.patch_port("br-ck", "ck-p", "ck-q", 1);
    for t in 1..=20u32 {
        host.vxlan_port("br-ck", &format!("ck-t{t}"), 100 + t, 10 + t);
    }
    // Other writers' flows: another owner's prefix, the neighbouring prefix, and cookie 0.
    let mut foreign = String::new();
    for i in 0..30u64 {
        foreign += &format!("cookie={:#x},table=2,priority=7,in_port={},actions=drop\n", (0xbeefu64 << 48) | i, i + 1);
        foreign += &format!("cookie={:#x},table=3,priority=7,in_port={},actions=drop\n", (0xa9e8u64 << 48) | i, i + 1);
        foreign += &format!("table=4,priority=7,in_port={},actions=drop\n", i + 1);
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), foreign).unwrap();
    host.ofctl(&["add-flows", "{mgmt:br-ck}", file.path().to_str().unwrap()]);

    let conn = host.connect("br-ck").await;
    let mut want: Vec<FlowCookie> = pipeline_flows(1000, 20, AGENT).map(|f| key(&f)).collect();
    want.sort();
    assert_eq!(want.len(), 60_041);
    assert_eq!(want.iter().map(|c| c.cookie).collect::<BTreeSet<_>>().len(), want.len(), "cookies are unique");

    let started = Instant::now();
    within("bundle_iter of 60,041", conn.bundle_iter(pipeline_flows(1000, 20, AGENT).map(FlowMod::add)))
        .await
        .expect("one bundle of 60,041 flow_mods");
    let installed = started.elapsed();
    let agg = host.ofctl(&["dump-aggregate", "{mgmt:br-ck}"]);
    assert!(agg.contains("flow_count=60131"), "60,041 of ours and 90 foreign: {agg}");

    let started = Instant::now();
    let got = cookies(&conn, &agent_cookies()).await;
    let dumped = started.elapsed();
    eprintln!("60,041 flows: bundle_iter {installed:?}, dump_cookies {dumped:?}");
    assert!(got == want, "the cookie filter returns exactly the agent's flows ({} of {})", got.len(), want.len());
    // Without a filter every flow comes back, the foreign ones with their cookies.
    let all = cookies(&conn, &FlowStatsRequest::all()).await;
    assert_eq!(all.len(), 60_131);
    assert_eq!(all.iter().filter(|c| c.cookie >> 48 == 0xbeef && c.table == 2).count(), 30);
    assert_eq!(all.iter().filter(|c| c.cookie >> 48 == 0xa9e8 && c.table == 3).count(), 30);
    assert_eq!(all.iter().filter(|c| c.cookie == 0 && c.table == 4 && c.priority == 7).count(), 30);
    // The fixed fields read alone agree with the whole flows decoded.
    let mut full: Vec<FlowCookie> =
        within("dump flows", conn.flows(&agent_cookies())).await.expect("dump flows").iter().map(key).collect();
    full.sort();
    assert!(full == got, "dump_cookies and dump_flows disagree");

    // Reconcile: the agent now wants a pipeline where every 60th flow is gone and 41 flows of
    // a 21st tenant exist. Stale cookies are deleted by exact cookie, missing flows added, in
    // one bundle; the foreign flows are untouched.
    let desired = || pipeline_flows(1000, 20, AGENT).enumerate().filter(|(i, _)| i % 60 != 7).map(|(_, f)| f);
    let extra = || pipeline_flows(1000, 21, AGENT).skip(20 * 3002).take(41);
    let held: BTreeSet<u64> = got.iter().map(|c| c.cookie).collect();
    let wanted: BTreeSet<u64> = desired().chain(extra()).map(|f| f.cookie).collect();
    let stale: Vec<FlowCookie> = got.iter().filter(|c| !wanted.contains(&c.cookie)).copied().collect();
    assert_eq!(stale.len(), 1001);
    let deletes = stale.iter().map(|c| FlowMod::delete_by_cookie(c.table, c.cookie, u64::MAX));
    let adds = desired().chain(extra()).filter(|f| !held.contains(&f.cookie)).map(FlowMod::add);
    let started = Instant::now();
    within("reconcile bundle", conn.bundle_iter(deletes.chain(adds))).await.expect("reconcile bundle");
    eprintln!("reconcile (1,001 deletes, 41 adds): {:?}", started.elapsed());
    let mut now: Vec<FlowCookie> = desired().chain(extra()).map(|f| key(&f)).collect();
    now.sort();
    assert!(cookies(&conn, &agent_cookies()).await == now, "after the reconcile the switch holds what is desired");
    assert_eq!(cookies(&conn, &FlowStatsRequest::all()).await.len(), now.len() + 90, "foreign flows untouched");
}
