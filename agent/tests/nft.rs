//! The agent's nf_tables client against the real kernel, read back with the `nft` tool (an
//! independent reader): a gateway's tables are what `nft list` shows, a second apply of the
//! same table writes nothing, a changed one replaces the old whole, a refused batch changes
//! nothing, and removal leaves no table. Needs root and nftables (fails loudly otherwise).

use std::collections::BTreeSet;

use overlay::gateway::ruleset::{Chain, ChainType, Hook, Match, Rule, Set, Table, Verdict, TABLE};
use overlay::gateway::{plan, GatewayInput, LocalTenant, TransitRange};
use overlay::model::{Endpoint, MacAddr, Tenant, TunnelType, Vni};
use overlay_agent::netlink::Netns;
use overlay_agent::nft;

fn setup() -> testbed::Netns {
    testbed::require_root();
    testbed::require_binary("nft", "apt-get install nftables");
    testbed::Netns::new("nft")
}

fn nft_list(ns: &testbed::Netns) -> String {
    ns.try_run(&["nft", "list", "table", "ip", TABLE]).unwrap_or_default()
}

/// A router's and the host's tables of a host with one tenant and one published port.
fn tables() -> (Table, Table) {
    let red = Tenant::new("red", Vni::new(100).unwrap(), "198.19.0.0/16".parse().unwrap(), TunnelType::Vxlan, 24)
        .unwrap()
        .with_control_plane_allow(vec!["198.18.7.0/24".parse().unwrap()])
        .unwrap();
    let ep = Endpoint {
        tenant: "red".into(),
        container_id: "c1".into(),
        ifname: "eth0".into(),
        machine_id: "m".into(),
        host: "h".into(),
        ip: "198.19.5.1".parse().unwrap(),
        mac: MacAddr::locally_administered_from(b"c1"),
        iface_id: "c1".into(),
        port: overlay::naming::container_port_name("c1", "eth0"),
        owner: None,
        publish: vec!["8080:80/tcp".parse().unwrap(), "5353:53/udp".parse().unwrap()],
    };
    let protected: BTreeSet<std::net::IpAddr> =
        ["198.18.1.1", "198.18.1.2", "198.18.9.254"].iter().map(|a| a.parse().unwrap()).collect();
    let p = plan(&GatewayInput {
        underlay_ip: "198.18.1.1".parse().unwrap(),
        transit: TransitRange::default(),
        tenants: vec![LocalTenant { tenant: &red, vlan: 1, mtu: 1450 }],
        endpoints: vec![&ep],
        protected,
    });
    let router = p.router_table(p.routers.values().next().unwrap());
    (router, p.host_table().unwrap())
}

/// The rule lines of `nft list` output, without counters.
fn rules(listing: &str) -> Vec<String> {
    listing
        .lines()
        .map(|l| l.trim().replace(" packets 0 bytes 0", ""))
        .filter(|l| !l.is_empty() && !l.starts_with("table") && !l.starts_with("chain") && l != "}")
        .collect()
}

#[tokio::test]
async fn the_router_and_host_tables_are_what_nft_lists() {
    let ns = setup();
    let handle = Netns::open(&ns.path()).await.unwrap();
    let (router, host) = tables();
    for table in [&router, &host] {
        assert!(nft::apply(&handle, table).await.unwrap(), "a first apply writes");
        let listed = nft_list(&ns);
        // One line, counters left out (nft wraps long element lists).
        let flat = rules(&listed).join(" ").split_whitespace().collect::<Vec<_>>().join(" ");
        for line in rules(&table.to_string()) {
            // nft names the standard priorities; the rules are ours, word for word.
            let named = line
                .replace("priority -100;", "priority dstnat;")
                .replace("priority 100;", "priority srcnat;")
                .replace("priority 0;", "priority filter;");
            assert!(flat.contains(&named) || flat.contains(&line), "{line:?} is not in what nft lists:\n{listed}");
        }
        assert!(listed.contains(&format!("comment \"overlay-agent {:016x}\"", table.fingerprint())), "{listed}");
        assert_eq!(nft::fingerprint(&handle, TABLE).await.unwrap(), Some(table.fingerprint()));
        assert!(!nft::apply(&handle, table).await.unwrap(), "the same table again writes nothing");
    }
    nft::remove(&handle, TABLE).await.unwrap();
    assert!(nft_list(&ns).is_empty(), "removed");
    assert_eq!(nft::fingerprint(&handle, TABLE).await.unwrap(), None);
    nft::remove(&handle, TABLE).await.unwrap();
}

#[tokio::test]
async fn a_changed_table_replaces_the_old_whole_and_a_refused_one_changes_nothing() {
    let ns = setup();
    let handle = Netns::open(&ns.path()).await.unwrap();
    let (router, _) = tables();
    nft::apply(&handle, &router).await.unwrap();
    let small = Table {
        name: TABLE.into(),
        sets: vec![Set { name: "protected".into(), elements: vec![] }],
        chains: vec![Chain {
            name: "forward".into(),
            kind: ChainType::Filter,
            hook: Hook::Forward,
            priority: 0,
            drop_by_default: false,
            rules: vec![Rule::new(vec![Match::DaddrIn("protected".into())], Verdict::Drop)],
        }],
    };
    assert!(nft::apply(&handle, &small).await.unwrap());
    let listed = nft_list(&ns);
    assert!(!listed.contains("dnat") && !listed.contains("chain input"), "the old content went:\n{listed}");
    // A rule the kernel refuses (a lookup of a set that does not exist): nothing of the batch
    // is applied, the previous table stays as it was.
    let mut bad = small.clone();
    bad.chains[0].rules.push(Rule::new(vec![Match::DaddrIn("missing".into())], Verdict::Drop));
    let e = nft::apply(&handle, &bad).await.unwrap_err();
    assert!(e.to_string().contains("refused rule 2 of chain forward"), "{e}");
    assert_eq!(nft_list(&ns), listed);
    assert_eq!(nft::fingerprint(&handle, TABLE).await.unwrap(), Some(small.fingerprint()));
}
