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
            self.db.vsctl_wait(&["add-port", bridge, name, "--", "set", "interface", name, "type=patch", &opt, &req])
        });
    }

    /// A `remote_ip=flow` VXLAN port with `key` (the flow-lab's per-tenant port).
    pub fn vxlan_port(&self, bridge: &str, name: &str, key: u32, ofport: u32) {
        let req = format!("ofport_request={ofport}");
        let key = format!("options:key={key}");
        tokio::task::block_in_place(|| {
            self.db.vsctl_wait(&[
                "add-port",
                bridge,
                name,
                "--",
                "set",
                "interface",
                name,
                "type=vxlan",
                &key,
                "options:remote_ip=flow",
                &req,
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
            format!(
                "{ck}priority=10,in_port={port} actions=push_vlan:0x8100,set_field:{}->vlan_vid,output:1",
                4096 + t
            ),
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

/// Flow shapes beyond flow-lab's: anti-spoofing (in_port + eth_src + ipv4_src, ARP spa/sha,
/// IPv6 ND), every match field with and without masks, reserved output ports, resubmit with a
/// port, partial moves, registers, tunnel fields, conntrack with zone, table, NAT and marks,
/// goto_table and write_metadata, dec_ttl. Table 2 onwards, so they sit beside flow-lab's.
pub fn shapes(cookie: u64) -> Vec<(Flow, String)> {
    use openflow_client::{port, Ct, CtZone, FieldRange, Instructions, Nat, NatAddrs};
    use std::net::Ipv6Addr;
    let ck = if cookie == 0 { String::new() } else { format!("cookie={cookie:#x}, ") };
    let c1 = Ipv4Addr::new(198, 19, 0, 11);
    let m1 = mac(1, 1);
    let v6: Ipv6Addr = "fd00:198:19::11".parse().unwrap();
    let mut v: Vec<(Flow, String)> = Vec::new();
    let mut add = |table: u8, prio: u16, m: Match, ins: Instructions, text: &str| {
        let flow = Flow::builder(table, prio).cookie(cookie).matching(m).instructions(ins).build().expect("valid");
        v.push((flow, format!("{ck}table={table}, priority={prio},{text}")));
    };
    let apply = Instructions::apply;
    // Anti-spoofing on a container port.
    add(
        2,
        100,
        Match::builder().in_port(5).eth_src(m1).ip().ipv4_src(c1).build().unwrap(),
        Instructions { goto_table: Some(3), ..Instructions::default() },
        &format!("ip,in_port=5,dl_src={m1},nw_src={c1} actions=goto_table:3"),
    );
    add(
        2,
        100,
        Match::builder().in_port(5).eth_src(m1).arp().arp_spa(c1).arp_sha(m1).build().unwrap(),
        Instructions { goto_table: Some(3), ..Instructions::default() },
        &format!("arp,in_port=5,dl_src={m1},arp_spa={c1},arp_sha={m1} actions=goto_table:3"),
    );
    add(
        2,
        100,
        Match::builder().in_port(5).eth_src(m1).icmpv6().icmpv6_type(135).nd_target(v6).nd_sll(m1).build().unwrap(),
        Instructions { goto_table: Some(3), ..Instructions::default() },
        &format!("icmp6,in_port=5,dl_src={m1},icmp_type=135,nd_target={v6},nd_sll={m1} actions=goto_table:3"),
    );
    add(
        2,
        100,
        Match::builder().in_port(5).eth_src(m1).icmpv6().icmpv6_type(136).nd_target(v6).nd_tll(m1).build().unwrap(),
        Instructions { goto_table: Some(3), ..Instructions::default() },
        &format!("icmp6,in_port=5,dl_src={m1},icmp_type=136,nd_target={v6},nd_tll={m1} actions=goto_table:3"),
    );
    add(2, 90, Match::builder().in_port(5).build().unwrap(), apply(vec![]), "in_port=5 actions=drop");
    // Masks.
    add(
        3,
        50,
        Match::builder().eth_dst_masked(Mac([1, 0, 0, 0, 0, 0]), Mac([1, 0, 0, 0, 0, 0])).vlan_any().build().unwrap(),
        apply(vec![Action::output(port::FLOOD)]),
        "vlan_tci=0x1000/0x1000,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=FLOOD",
    );
    add(
        3,
        50,
        Match::builder()
            .ip()
            .ipv4_src_masked(Ipv4Addr::new(198, 19, 0, 0), Ipv4Addr::new(255, 255, 0, 0))
            .ipv4_dst_masked(Ipv4Addr::new(198, 18, 100, 0), Ipv4Addr::new(255, 255, 255, 0))
            .build()
            .unwrap(),
        apply(vec![Action::DecTtl, Action::output(port::LOCAL)]),
        "ip,nw_src=198.19.0.0/16,nw_dst=198.18.100.0/24 actions=dec_ttl,LOCAL",
    );
    add(
        3,
        50,
        Match::builder()
            .ipv6()
            .ipv6_src_masked("fd00::".parse().unwrap(), "ffff:ffff::".parse().unwrap())
            .ipv6_dst(v6)
            .build()
            .unwrap(),
        apply(vec![Action::output(port::NORMAL)]),
        &format!("ipv6,ipv6_src=fd00::/32,ipv6_dst={v6} actions=NORMAL"),
    );
    add(
        3,
        50,
        Match::builder()
            .arp()
            .arp_spa_masked(Ipv4Addr::new(198, 19, 0, 0), Ipv4Addr::new(255, 255, 0, 0))
            .arp_tpa(c1)
            .arp_tha(m1)
            .build()
            .unwrap(),
        apply(vec![Action::output(port::ALL)]),
        &format!("arp,arp_spa=198.19.0.0/16,arp_tpa={c1},arp_tha={m1} actions=ALL"),
    );
    add(
        3,
        40,
        Match::builder().tcp().tcp_src(1024).tcp_dst(80).build().unwrap(),
        apply(vec![Action::controller()]),
        "tcp,tp_src=1024,tp_dst=80 actions=CONTROLLER:65535",
    );
    add(
        3,
        40,
        Match::builder().udp().udp_src(68).udp_dst(67).build().unwrap(),
        apply(vec![Action::output(port::IN_PORT)]),
        "udp,tp_src=68,tp_dst=67 actions=IN_PORT",
    );
    add(
        3,
        40,
        Match::builder().icmp().icmp_type(8).icmp_code(0).build().unwrap(),
        apply(vec![Action::output(3)]),
        "icmp,icmp_type=8,icmp_code=0 actions=output:3",
    );
    add(
        3,
        40,
        Match::builder().icmpv6().icmpv6_type(128).icmpv6_code(0).build().unwrap(),
        apply(vec![Action::output(3)]),
        "icmp6,icmp_type=128,icmp_code=0 actions=output:3",
    );
    add(
        3,
        40,
        Match::builder().vlan_vid(7).vlan_pcp(5).build().unwrap(),
        apply(vec![Action::set_vlan_vid(8), Action::output(3)]),
        "dl_vlan=7,dl_vlan_pcp=5 actions=set_field:4104->vlan_vid,output:3",
    );
    add(
        3,
        40,
        Match::builder().vlan_none().eth_type(0x88cc).build().unwrap(),
        apply(vec![]),
        "vlan_tci=0x0000/0x1fff,dl_type=0x88cc actions=drop",
    );
    // Metadata, registers, tunnel fields, packet mark.
    add(
        4,
        30,
        Match::builder()
            .metadata_masked(0x100, 0xff00)
            .reg(0, 7)
            .reg_masked(15, 0x10, 0xf0)
            .pkt_mark(9)
            .build()
            .unwrap(),
        Instructions { write_metadata: Some((0x5, 0xff)), goto_table: Some(5), ..Instructions::default() },
        "pkt_mark=0x9,reg0=0x7,reg15=0x10/0xf0,metadata=0x100/0xff00 actions=write_metadata:0x5/0xff,goto_table:5",
    );
    add(
        4,
        30,
        Match::builder()
            .tun_id(100)
            .tun_src(Ipv4Addr::new(198, 18, 0, 2))
            .tun_dst_masked(Ipv4Addr::new(198, 18, 0, 0), Ipv4Addr::new(255, 255, 255, 0))
            .in_port(10)
            .build()
            .unwrap(),
        apply(vec![
            Action::set_field(Field::TunId, 200),
            Action::set_field(Field::Reg(3), 0x42),
            Action::Move {
                src: FieldRange { field: Field::TunId, ofs: 0, n_bits: 16 },
                dst: FieldRange { field: Field::Reg(4), ofs: 16, n_bits: 16 },
            },
            Action::Resubmit { in_port: Some(port::IN_PORT), table: Some(5) },
            Action::Resubmit { in_port: Some(7), table: None },
        ]),
        "tun_id=0x64,tun_src=198.18.0.2,tun_dst=198.18.0.0/24,in_port=10 actions=set_field:0xc8->tun_id,set_field:0x42->reg3,move:NXM_NX_TUN_ID[0..15]->NXM_NX_REG4[16..31],resubmit(,5),resubmit:7",
    );
    // Conntrack.
    add(
        5,
        20,
        Match::builder().ct_state_masked(0x20, 0x21).ip().build().unwrap(),
        apply(vec![Action::Ct(Ct { zone: CtZone::Immediate(5), table: Some(6), ..Ct::default() })]),
        "ct_state=-new+trk,ip actions=ct(table=6,zone=5)",
    );
    add(
        5,
        20,
        Match::builder().ct_state_masked(0x21, 0x21).ct_zone(5).ct_mark(3).ip().build().unwrap(),
        apply(vec![Action::Ct(Ct {
            commit: true,
            zone: CtZone::Field(FieldRange { field: Field::Reg(6), ofs: 0, n_bits: 16 }),
            actions: vec![
                Action::Nat(Nat {
                    src: true,
                    addrs: Some(NatAddrs::V4(Ipv4Addr::new(198, 18, 100, 1), Some(Ipv4Addr::new(198, 18, 100, 9)))),
                    ports: Some((1024, Some(65000))),
                    persistent: true,
                    ..Nat::default()
                }),
                Action::set_field(Field::CtMark, 1),
            ],
            ..Ct::default()
        })]),
        "ct_state=+new+trk,ct_zone=5,ct_mark=0x3,ip actions=ct(commit,zone=NXM_NX_REG6[0..15],nat(src=198.18.100.1-198.18.100.9:1024-65000,persistent),exec(set_field:0x1->ct_mark))",
    );
    add(
        5,
        20,
        Match::builder().ipv6().build().unwrap(),
        apply(vec![
            Action::Ct(Ct {
                commit: true,
                actions: vec![Action::Nat(Nat { src: false, addrs: Some(NatAddrs::V6(v6, None)), ..Nat::default() })],
                ..Ct::default()
            }),
            Action::CtClear,
            Action::Ct(Ct { table: Some(7), actions: vec![Action::Nat(Nat::default())], ..Ct::default() }),
        ]),
        &format!("ipv6 actions=ct(commit,nat(dst={v6})),ct_clear,ct(table=7,nat)"),
    );
    v
}

/// Asserts two sorted flow lists are equal, printing each difference readably.
pub fn assert_same_flows(got: &[Flow], want: &[Flow]) {
    if got == want {
        return;
    }
    let mut msg = String::new();
    for w in want.iter().filter(|w| !got.contains(w)) {
        msg += &format!("sent, not read back: {w}\n  {w:?}\n");
    }
    for g in got.iter().filter(|g| !want.contains(g)) {
        msg += &format!("read back, not sent: {g}\n  {g:?}\n");
    }
    panic!("{} flows read back, {} sent:\n{msg}", got.len(), want.len());
}

/// flow-scale.sh's flows: per tenant t (1..=20) and peer j (0..1000) an ARP responder flow and
/// a unicast flow, a flood flow per tenant and a port flow per tenant in table 0, plus the
/// patch-port flow.
pub fn scale_flows(peers: u32, tenants: u8, cookie: u64) -> Vec<Flow> {
    flows_iter(peers, tenants, false, move |_| cookie).collect()
}

/// The agent's pipeline at scale, produced lazily: [`scale_flows`]' flows plus, per tenant and
/// peer, an ingress flow in table 0 (from that peer's tunnel, tagged with the tenant's VLAN):
/// 3 x peers x tenants + 2 x tenants + 1 flows (60,041 for 1,000 x 20). Each flow's cookie is
/// `prefix << 48` | a 48-bit hash of its content, as the agent marks its flows.
pub fn pipeline_flows(peers: u32, tenants: u8, prefix: u16) -> impl Iterator<Item = Flow> + Send + Clone {
    flows_iter(peers, tenants, true, move |f| content_cookie(prefix, f))
}

/// `prefix << 48` | 48 bits of a hash of the flow (its cookie field left out).
pub fn content_cookie(prefix: u16, flow: &Flow) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut f = flow.clone();
    f.cookie = 0;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    f.hash(&mut h);
    (u64::from(prefix) << 48) | (h.finish() & 0xffff_ffff_ffff)
}

/// The cookie mask that selects a 16-bit prefix.
pub const PREFIX_MASK: u64 = 0xffff << 48;

fn flows_iter(
    peers: u32,
    tenants: u8,
    ingress: bool,
    cookie: impl Fn(&Flow) -> u64 + Clone + Send,
) -> impl Iterator<Item = Flow> + Send + Clone {
    let ip = |j: u32| Ipv4Addr::new(198, 18, ((j + 2) / 250) as u8, ((j + 2) % 250 + 1) as u8);
    let mac = |t: u8, j: u32| Mac([2, t, (j >> 8) as u8, j as u8, 0, 1]);
    let cip = |j: u32| Ipv4Addr::new(10, (j >> 8) as u8, j as u8, 1);
    let b = |table, prio, m: Match, acts: Vec<Action>| {
        Flow::builder(table, prio).matching(m).actions(acts).build().unwrap()
    };
    let per_peer = move |t: u8, j: u32| {
        let port = 10 + u32::from(t);
        let m = mac(t, j);
        let arp = b(
            1,
            20,
            Match::builder().vlan_vid(u16::from(t)).arp().arp_op(1).arp_tpa(cip(j)).build().unwrap(),
            vec![
                Action::move_field(Field::EthSrc, Field::EthDst),
                Action::set_field(Field::EthSrc, m.to_u128()),
                Action::set_field(Field::ArpOp, 2),
                Action::move_field(Field::ArpSha, Field::ArpTha),
                Action::move_field(Field::ArpSpa, Field::ArpTpa),
                Action::set_field(Field::ArpSha, m.to_u128()),
                Action::set_field(Field::ArpSpa, u128::from(u32::from(cip(j)))),
                Action::in_port(),
            ],
        );
        let unicast = b(
            1,
            10,
            Match::builder().vlan_vid(u16::from(t)).eth_dst(m).build().unwrap(),
            vec![
                Action::PopVlan,
                Action::set_field(Field::TunIpv4Dst, u128::from(u32::from(ip(j)))),
                Action::output(port),
            ],
        );
        let from_peer = ingress.then(|| {
            b(
                0,
                20,
                Match::builder().in_port(port).tun_id(100 + u64::from(t)).tun_src(ip(j)).build().unwrap(),
                vec![Action::push_vlan(), Action::set_vlan_vid(u16::from(t)), Action::resubmit_table(1)],
            )
        });
        [Some(arp), Some(unicast), from_peer].into_iter().flatten()
    };
    let per_tenant = move |t: u8| {
        let port = 10 + u32::from(t);
        let mut flood = vec![Action::PopVlan];
        for j in 0..peers {
            flood.push(Action::set_field(Field::TunIpv4Dst, u128::from(u32::from(ip(j)))));
            flood.push(Action::output(port));
        }
        [
            b(1, 5, Match::builder().vlan_vid(u16::from(t)).build().unwrap(), flood),
            b(
                0,
                10,
                Match::builder().in_port(port).build().unwrap(),
                vec![Action::push_vlan(), Action::set_vlan_vid(u16::from(t)), Action::output(1)],
            ),
        ]
    };
    let patch = b(0, 10, Match::builder().in_port(1).build().unwrap(), vec![Action::resubmit_table(1)]);
    (1..=tenants)
        .flat_map(move |t| (0..peers).flat_map(move |j| per_peer(t, j)).chain(per_tenant(t)))
        .chain(std::iter::once(patch))
        .map(move |mut f| {
            f.cookie = cookie(&f);
            f
        })
}
