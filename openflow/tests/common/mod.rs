//! Fixtures shared by the integration tests: a private ovsdb-server + ovs-vswitchd in a network
//! namespace of their own (one netdev ovs-vswitchd per namespace), bridges on it, and the flow
//! shapes of `shared/lab/flow-lab.sh` with the text ovs-ofctl prints for each.
#![allow(dead_code)]

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use openflow_client::{
    Action, Connection, ConnectionOptions, Field, Flow, FlowStatsRequest, Mac, Match, Target, OFP13_VERSION,
};
use testbed::{Netns, OvsdbServer, Vswitchd};

/// Bound of every single wait in a test.
pub const T: Duration = Duration::from_secs(30);

/// Awaits `f`, failing the test (not hanging it) after `T`.
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(T, f).await.unwrap_or_else(|_| panic!("timed out after {T:?}: {what}"))
}

/// ovsdb-server and ovs-vswitchd in their own namespace. Fields drop in order: the daemons
/// first, then the namespace.
pub struct Host {
    pub vs: Vswitchd,
    pub db: OvsdbServer,
    pub ns: Netns,
}

impl Host {
    /// Panics with what to install when OVS or root is missing.
    pub fn start() -> Host {
        tokio::task::block_in_place(|| {
            testbed::require_root();
            let ns = Netns::new("of");
            let db = OvsdbServer::start_in(Some(ns.name()));
            let vs = Vswitchd::start(&db, Some(ns.name()));
            Host { vs, db, ns }
        })
    }

    /// A netdev bridge with `fail_mode=secure` (no NORMAL flow of its own) and `extra` columns.
    pub fn bridge(&self, name: &str, extra: &[&str]) -> PathBuf {
        let mut cols = vec!["fail_mode=secure"];
        cols.extend_from_slice(extra);
        tokio::task::block_in_place(|| self.vs.add_netdev_bridge(&self.db, name, &cols))
    }

    /// Adds a port with `ofport_request` (patch ports need no kernel support).
    pub fn patch_port(&self, bridge: &str, name: &str, peer: &str, ofport: u32) {
        let req = format!("ofport_request={ofport}");
        let opt = format!("options:peer={peer}");
        tokio::task::block_in_place(|| {
            self.db.vsctl_wait(&[
                "add-port", bridge, name, "--", "set", "interface", name, "type=patch", &opt, &req,
            ])
        });
    }

    /// A `remote_ip=flow` VXLAN port with `key` (the flow-lab's per-tenant port).
    pub fn vxlan_port(&self, bridge: &str, name: &str, key: u32, ofport: u32) {
        let req = format!("ofport_request={ofport}");
        let key = format!("options:key={key}");
        tokio::task::block_in_place(|| {
            self.db.vsctl_wait(&[
                "add-port", bridge, name, "--", "set", "interface", name, "type=vxlan", &key,
                "options:remote_ip=flow", &req,
            ])
        });
    }

    /// `ovs-ofctl -O OpenFlow13 ARGS` (with `{mgmt:BR}` for a bridge's socket).
    pub fn ofctl(&self, args: &[&str]) -> String {
        let mut all = vec!["-O", "OpenFlow13"];
        all.extend_from_slice(args);
        tokio::task::block_in_place(|| self.vs.ofctl(&all))
    }

    /// `dump-flows --no-stats`, one flow per line, sorted.
    pub fn dump_text(&self, bridge: &str) -> Vec<String> {
        let mgmt = format!("{{mgmt:{bridge}}}");
        let out = self.ofctl(&["dump-flows", "--no-stats", &mgmt]);
        let mut lines: Vec<String> = out.lines().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()).collect();
        lines.sort();
        lines
    }

    pub fn target(&self, bridge: &str) -> Target {
        Target::Unix(self.vs.mgmt_socket(bridge))
    }

    pub async fn connect(&self, bridge: &str) -> Connection {
        self.connect_with(bridge, ConnectionOptions::default()).await
    }

    pub async fn connect_with(&self, bridge: &str, options: ConnectionOptions) -> Connection {
        let t = self.target(bridge);
        within("connect", Connection::connect(&t, options)).await.unwrap_or_else(|e| panic!("connect {t}: {e}"))
    }
}

/// The bridge flow-lab builds: patch port 1, tenant ports 10 (red, VNI 100) and 20 (blue, 200).
pub fn flow_lab_bridge(host: &Host, name: &str, extra: &[&str]) {
    host.bridge(name, extra);
    host.patch_port(name, &format!("{name}-p"), &format!("{name}-q"), 1);
    host.vxlan_port(name, &format!("{name}-r"), 100, 10);
    host.vxlan_port(name, &format!("{name}-b"), 200, 20);
}

/// Sorted flows of a dump.
pub async fn dump_sorted(conn: &Connection, req: &FlowStatsRequest) -> Vec<Flow> {
    let mut v = within("dump", conn.flows(req)).await.expect("dump flows");
    v.sort();
    v
}

pub fn mac(t: u8, j: u8) -> Mac {
    Mac([2, 0, 0, 0, t, j])
}

/// flow-lab.sh's br-tun flows of host `i` among hosts 1..=3 (two tenants, t = 1, 2 on local VLAN
/// t and tunnel port 10 t), each with the line `ovs-ofctl -O OpenFlow13 dump-flows --no-stats`
/// prints for it (cookie shown when non-zero).
pub fn flow_lab(i: u8, cookie: u64) -> Vec<(Flow, String)> {
    let ck = if cookie == 0 { String::new() } else { format!("cookie={cookie:#x}, ") };
    let mut v = Vec::new();
    let mut add = |flow: Flow, text: String| v.push((flow, text));
    let f = |table: u8, prio: u16, m: Match, acts: Vec<Action>| {
        Flow::builder(table, prio).cookie(cookie).matching(m).actions(acts).build().expect("valid flow")
    };
    add(
        f(0, 10, Match::builder().in_port(1).build().unwrap(), vec![Action::resubmit_table(1)]),
        format!("{ck}priority=10,in_port=1 actions=resubmit(,1)"),
    );
    for t in 1..=2u16 {
        let port = u32::from(t) * 10;
        add(
            f(
                0,
                10,
                Match::builder().in_port(port).build().unwrap(),
                vec![Action::push_vlan(), Action::set_vlan_vid(t), Action::output(1)],
            ),
            format!("{ck}priority=10,in_port={port} actions=push_vlan:0x8100,set_field:{}->vlan_vid,output:1", 4096 + t),
        );
    }
    add(f(0, 0, Match::new(), vec![]), format!("{ck}priority=0 actions=drop"));
    for t in 1..=2u8 {
        let port = u32::from(t) * 10;
        let mut flood = vec![Action::PopVlan];
        let mut flood_text = String::from("pop_vlan");
        for j in 1..=3u8 {
            if j == i {
                continue;
            }
            let m = mac(t, j);
            let cip = Ipv4Addr::new(198, 19, 0, 10 + j);
            let tun = Ipv4Addr::new(198, 18, 0, j);
            add(
                f(
                    1,
                    20,
                    Match::builder().vlan_vid(u16::from(t)).arp().arp_op(1).arp_tpa(cip).build().unwrap(),
                    vec![
                        Action::move_field(Field::EthSrc, Field::EthDst),
                        Action::set_field(Field::EthSrc, m.to_u128()),
                        Action::set_field(Field::ArpOp, 2),
                        Action::move_field(Field::ArpSha, Field::ArpTha),
                        Action::move_field(Field::ArpSpa, Field::ArpTpa),
                        Action::set_field(Field::ArpSha, m.to_u128()),
                        Action::set_field(Field::ArpSpa, u128::from(u32::from(cip))),
                        Action::in_port(),
                    ],
                ),
                format!(
                    "{ck}table=1, priority=20,arp,dl_vlan={t},arp_tpa={cip},arp_op=1 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:{m}->eth_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:{m}->arp_sha,set_field:{cip}->arp_spa,IN_PORT"
                ),
            );
            add(
                f(
                    1,
                    10,
                    Match::builder().vlan_vid(u16::from(t)).eth_dst(m).build().unwrap(),
                    vec![Action::PopVlan, Action::set_field(Field::TunIpv4Dst, u128::from(u32::from(tun))), Action::output(port)],
                ),
                format!("{ck}table=1, priority=10,dl_vlan={t},dl_dst={m} actions=pop_vlan,set_field:{tun}->tun_dst,output:{port}"),
            );
            flood.push(Action::set_field(Field::TunIpv4Dst, u128::from(u32::from(tun))));
            flood.push(Action::output(port));
            flood_text += &format!(",set_field:{tun}->tun_dst,output:{port}");
        }
        add(
            f(1, 5, Match::builder().vlan_vid(u16::from(t)).build().unwrap(), flood),
            format!("{ck}table=1, priority=5,dl_vlan={t} actions={flood_text}"),
        );
    }
    add(f(1, 0, Match::new(), vec![]), format!("{ck}table=1, priority=0 actions=drop"));
    v
}

/// A connection restricted to OpenFlow 1.3 (ONF bundles).
pub fn of13_only() -> ConnectionOptions {
    ConnectionOptions { versions: vec![OFP13_VERSION], ..ConnectionOptions::default() }
}
