use std::net::IpAddr;

use ipnet::IpNet;

use super::*;
use crate::error::ModelError;
use crate::naming;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn vni(v: u32) -> Vni {
    Vni::new(v).unwrap()
}

#[test]
fn vni_range_edges() {
    assert!(Vni::new(0).is_err());
    assert_eq!(Vni::new(1).unwrap().get(), 1);
    assert_eq!(Vni::new(VNI_MAX).unwrap().get(), VNI_MAX);
    assert!(Vni::new(VNI_MAX + 1).is_err());
    assert!(Vni::new(u32::MAX).is_err());
    assert_eq!(Vni::new(0).unwrap_err().to_string(), "VNI 0 is out of range: use 1..=16777215");
}

#[test]
fn vni_from_str_and_serde() {
    assert_eq!("42".parse::<Vni>().unwrap().get(), 42);
    assert_eq!(" 7 ".parse::<Vni>().unwrap().get(), 7);
    assert!(matches!("x".parse::<Vni>(), Err(ModelError::VniNotANumber { .. })));
    assert!(matches!("-1".parse::<Vni>(), Err(ModelError::VniNotANumber { .. })));
    assert_eq!("99999999999".parse::<Vni>(), Err(ModelError::VniOutOfRange { vni: 99_999_999_999 }));
    assert_eq!(serde_json::to_string(&vni(5)).unwrap(), "5");
    assert!(serde_json::from_str::<Vni>("0").is_err());
    assert!(serde_json::from_str::<Vni>("16777216").is_err());
    assert_eq!(serde_json::from_str::<Vni>("16777215").unwrap(), vni(VNI_MAX));
}

#[test]
fn tunnel_type_text_forms() {
    for t in TunnelType::ALL {
        assert_eq!(t.to_string().parse::<TunnelType>().unwrap(), t);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, format!("\"{}\"", t.as_str()));
        assert_eq!(serde_json::from_str::<TunnelType>(&json).unwrap(), t);
    }
    assert_eq!("VXLAN".parse::<TunnelType>().unwrap(), TunnelType::Vxlan);
    assert!("geneve".parse::<TunnelType>().is_err());
    assert!(serde_json::from_str::<TunnelType>("\"Gre\"").is_err());
}

#[test]
fn tenant_name_rules() {
    for ok in ["a", "A1", "blue", "team-1.prod_x", &"a".repeat(63)] {
        assert!(validate_tenant_name(ok).is_ok(), "{ok}");
    }
    for bad in ["", ".", "..", "-a", "_a", "a/b", "a b", "é", &"a".repeat(64), "a\n"] {
        assert!(validate_tenant_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn container_id_rules() {
    assert!(validate_container_id(&"f".repeat(64)).is_ok());
    assert!(validate_container_id(&"f".repeat(128)).is_ok());
    assert!(validate_container_id(&"f".repeat(129)).is_err());
    assert!(validate_container_id("../etc").is_err());
    assert!(validate_container_id("a/b").is_err());
    assert!(validate_container_id("").is_err());
}

#[test]
fn hostname_rules() {
    for ok in ["a", "host-1", "node1.example.com", "1", &"a".repeat(253)] {
        assert!(validate_hostname(ok).is_ok(), "{ok}");
    }
    for bad in ["", "-a", "a-", ".a", "a.", "a..b", "a/b", "a_b", "héllo", "a b", &"a".repeat(254)] {
        assert!(validate_hostname(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn tenant_new_derives_gateway() {
    let t = Tenant::new("blue", vni(10), net("10.1.0.0/16"), TunnelType::Vxlan, 24).unwrap();
    assert_eq!(t.gateway(), "10.1.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(t.broadcast(), Some("10.1.255.255".parse().unwrap()));
    assert!(!t.is_ipv6());
    let t6 = Tenant::new("v6", vni(11), net("fd00:1::/48"), TunnelType::Gre, 64).unwrap();
    assert_eq!(t6.gateway(), "fd00:1::1".parse::<IpAddr>().unwrap());
    assert_eq!(t6.broadcast(), None);
}

#[test]
fn tenant_new_rejects_host_bits_with_hint() {
    let err = Tenant::new("b", vni(1), net("10.1.2.3/16"), TunnelType::Gre, 24).unwrap_err();
    assert_eq!(err, ModelError::CidrHostBits { cidr: net("10.1.2.3/16"), network: net("10.1.0.0/16") });
    assert!(err.to_string().contains("use the network address 10.1.0.0/16"));
}

#[test]
fn tenant_subnet_len_bounds() {
    let c = net("10.0.0.0/16");
    assert!(Tenant::new("t", vni(1), c, TunnelType::Gre, 16).is_ok());
    assert!(Tenant::new("t", vni(1), c, TunnelType::Gre, 30).is_ok());
    assert!(matches!(
        Tenant::new("t", vni(1), c, TunnelType::Gre, 31),
        Err(ModelError::SubnetLenTooLong { max: 30, .. })
    ));
    assert!(matches!(Tenant::new("t", vni(1), c, TunnelType::Gre, 15), Err(ModelError::SubnetLenTooShort { .. })));
    // A /31 or /32 tenant cannot hold a single lease of 4 addresses.
    assert!(Tenant::new("t", vni(1), net("10.0.0.0/31"), TunnelType::Gre, 31).is_err());
    let c6 = net("fd00::/64");
    assert!(Tenant::new("t", vni(1), c6, TunnelType::Gre, 126).is_ok());
    assert!(Tenant::new("t", vni(1), c6, TunnelType::Gre, 127).is_err());
    assert!(Tenant::new("t", vni(1), c6, TunnelType::Gre, 63).is_err());
}

#[test]
fn default_subnet_len_is_always_accepted() {
    for s in ["10.0.0.0/8", "10.0.0.0/24", "10.0.0.0/28", "10.0.0.0/30", "fd00::/48", "fd00::/120"] {
        let c = net(s);
        let len = default_subnet_len(&c);
        assert!(Tenant::new("t", vni(1), c, TunnelType::Vxlan, len).is_ok(), "{s} /{len}");
    }
    assert_eq!(default_subnet_len(&net("10.0.0.0/8")), 24);
    assert_eq!(default_subnet_len(&net("10.0.0.0/28")), 28);
    assert_eq!(default_subnet_len(&net("fd00::/48")), 64);
}

#[test]
fn tenant_json_round_trip_and_stable_shape() {
    let t = Tenant::new("blue", vni(10), net("10.1.0.0/16"), TunnelType::Vxlan, 24).unwrap();
    let json = String::from_utf8(t.to_json()).unwrap();
    assert_eq!(
        json,
        r#"{"name":"blue","vni":10,"cidr":"10.1.0.0/16","tunnel":"vxlan","subnet_len":24,"gateway":"10.1.0.1"}"#
    );
    assert_eq!(Tenant::from_json(json.as_bytes()).unwrap(), t);
}

#[test]
fn tenant_gateway_settings_default_on_and_round_trip() {
    let old = br#"{"name":"b","vni":3,"cidr":"10.0.0.0/24","tunnel":"gre","subnet_len":26}"#;
    let t = Tenant::from_json(old).unwrap();
    assert!(t.egress() && t.control_plane_allow().is_empty(), "records before the gateway: egress on");
    let t = t.with_egress(false).with_control_plane_allow(vec![net("10.9.0.0/16"), net("10.8.0.0/16")]).unwrap();
    let json = String::from_utf8(t.to_json()).unwrap();
    assert!(
        json.contains(r#""egress":false"#) && json.contains(r#""control_plane_allow":["10.8.0.0/16","10.9.0.0/16"]"#),
        "{json}"
    );
    assert_eq!(Tenant::from_json(json.as_bytes()).unwrap(), t);
    let host_bits = Tenant::new("b", vni(3), net("10.0.0.0/24"), TunnelType::Gre, 26)
        .unwrap()
        .with_control_plane_allow(vec![net("10.9.0.1/16")]);
    assert!(host_bits.unwrap_err().to_string().contains("10.9.0.0/16"));
    let bad = br#"{"name":"b","vni":3,"cidr":"10.0.0.0/24","tunnel":"gre","subnet_len":26,"control_plane_allow":["10.9.0.1/16"]}"#;
    assert!(Tenant::from_json(bad).is_err());
}

#[test]
fn tenant_from_json_revalidates() {
    let no_gw = br#"{"name":"b","vni":3,"cidr":"10.0.0.0/24","tunnel":"gre","subnet_len":26}"#;
    assert_eq!(Tenant::from_json(no_gw).unwrap().gateway(), "10.0.0.1".parse::<IpAddr>().unwrap());
    let cases: &[&[u8]] = &[
        br#"{"name":"b","vni":0,"cidr":"10.0.0.0/24","tunnel":"gre","subnet_len":26}"#,
        br#"{"name":"../x","vni":3,"cidr":"10.0.0.0/24","tunnel":"gre","subnet_len":26}"#,
        br#"{"name":"b","vni":3,"cidr":"10.0.0.9/24","tunnel":"gre","subnet_len":26}"#,
        br#"{"name":"b","vni":3,"cidr":"10.0.0.0/24","tunnel":"ipip","subnet_len":26}"#,
        br#"{"name":"b","vni":3,"cidr":"10.0.0.0/24","tunnel":"gre","subnet_len":31}"#,
        br#"{"name":"b","vni":3,"cidr":"10.0.0.0/24","tunnel":"gre","subnet_len":300}"#,
        br#"{"name":"b","vni":3,"cidr":"10.0.0.0/24","tunnel":"gre","subnet_len":26,"gateway":"10.0.0.2"}"#,
        br#"{"name":"b"}"#,
        b"",
        b"\xff\xfe",
        b"[]",
        b"null",
    ];
    for c in cases {
        let e = Tenant::from_json(c);
        assert!(e.is_err(), "{}", String::from_utf8_lossy(c));
    }
    let mismatch = Tenant::from_json(cases[6]).unwrap_err();
    assert!(mismatch.to_string().contains("10.0.0.2"), "{mismatch}");
}

#[test]
fn garbage_never_panics() {
    // A cheap fuzz: every prefix and every single-byte corruption of a valid record.
    let t = Tenant::new("blue", vni(10), net("10.1.0.0/16"), TunnelType::Vxlan, 24).unwrap();
    let json = t.to_json();
    for i in 0..json.len() {
        let _ = Tenant::from_json(&json[..i]);
        let _ = HostRecord::from_json(&json[..i]);
        for b in [b'0', b'"', b'}', 0xff, b'-', b'/'] {
            let mut j = json.clone();
            j[i] = b;
            if let Ok(t2) = Tenant::from_json(&j) {
                // Whatever decodes is valid.
                assert!(Tenant::new(t2.name(), t2.vni(), t2.cidr(), t2.tunnel(), t2.subnet_len()).is_ok());
            }
        }
    }
}

fn host() -> HostRecord {
    HostRecord {
        hostname: "node1".into(),
        underlay_ip: "192.168.0.1".parse().unwrap(),
        system_id: "3f8a-1".into(),
        machine_id: "m-3f8a".into(),
        tunnel_types: vec![TunnelType::Vxlan, TunnelType::Gre],
        version: "0.1.0".into(),
    }
}

#[test]
fn host_record_json() {
    let h = host();
    let json = String::from_utf8(h.to_json()).unwrap();
    assert_eq!(
        json,
        r#"{"hostname":"node1","underlay_ip":"192.168.0.1","system_id":"3f8a-1","machine_id":"m-3f8a","tunnel_types":["vxlan","gre"],"version":"0.1.0"}"#
    );
    assert_eq!(HostRecord::from_json(json.as_bytes()).unwrap(), h);
    let minimal = br#"{"hostname":"n","underlay_ip":"10.0.0.1","system_id":"x"}"#;
    let minimal = HostRecord::from_json(minimal).unwrap();
    assert!(minimal.tunnel_types.is_empty());
    assert_eq!(minimal.machine_id, "", "records of agents before machine ids decode");
}

#[test]
fn host_record_validation() {
    let mut h = host();
    h.hostname = "a/b".into();
    assert!(matches!(h.validate(), Err(ModelError::InvalidHostname { .. })));
    let mut h = host();
    h.underlay_ip = "0.0.0.0".parse().unwrap();
    assert!(matches!(h.validate(), Err(ModelError::InvalidUnderlayIp { .. })));
    h.underlay_ip = "ff02::1".parse().unwrap();
    assert!(h.validate().is_err());
    let mut h = host();
    h.system_id = "  ".into();
    assert!(matches!(h.validate(), Err(ModelError::InvalidSystemId { .. })));
    let bad = br#"{"hostname":"..","underlay_ip":"10.0.0.1","system_id":"x"}"#;
    assert!(HostRecord::from_json(bad).is_err());
}

#[test]
fn lease_validation_and_fit() {
    let t = Tenant::new("blue", vni(10), net("10.1.0.0/16"), TunnelType::Vxlan, 24).unwrap();
    let mut l = SubnetLease {
        tenant: "blue".into(),
        subnet: net("10.1.7.0/24"),
        host: "node1".into(),
        underlay_ip: "192.168.0.1".parse().unwrap(),
    };
    assert!(l.validate_for(&t).is_ok());
    assert_eq!(SubnetLease::from_json(&l.to_json()).unwrap(), l);
    l.subnet = net("10.2.7.0/24");
    assert!(matches!(l.validate_for(&t), Err(ModelError::LeaseOutsideTenant { .. })));
    l.subnet = net("10.1.7.0/25");
    assert!(l.validate_for(&t).is_err());
    l.subnet = net("10.1.7.1/24");
    assert!(matches!(l.validate(), Err(ModelError::CidrHostBits { .. })));
    l.subnet = net("fd00::/24");
    assert!(l.validate_for(&t).is_err());
    l.subnet = net("10.1.7.0/24");
    l.tenant = "red".into();
    assert!(l.validate_for(&t).is_err());
}

#[test]
fn lease_key_segment_round_trip() {
    for s in ["10.1.2.0/24", "0.0.0.0/0", "fd00:1::/64", "10.0.0.4/30"] {
        let n = net(s);
        let seg = lease_key_segment(&n);
        assert!(!seg.contains('/'));
        assert_eq!(parse_lease_key_segment(&seg).unwrap(), n);
    }
    assert_eq!(lease_key_segment(&net("10.1.2.0/24")), "10.1.2.0-24");
    for bad in ["10.1.2.0", "10.1.2.0-33", "10.1.2.1-24", "x-24", "10.1.2.0-", "-24", "10.1.2.0--24"] {
        assert!(parse_lease_key_segment(bad).is_err(), "{bad}");
    }
}

#[test]
fn mac_parse_and_display() {
    let m: MacAddr = "AA:bb:0C:dd:ee:01".parse().unwrap();
    assert_eq!(m.0, [0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0x01]);
    assert_eq!(m.to_string(), "aa:bb:0c:dd:ee:01");
    assert_eq!(serde_json::to_string(&m).unwrap(), "\"aa:bb:0c:dd:ee:01\"");
    for bad in [
        "",
        "aa:bb:cc:dd:ee",
        "aa:bb:cc:dd:ee:ff:00",
        "aa-bb-cc-dd-ee-ff",
        "aabb.ccdd.eeff",
        "a:bb:cc:dd:ee:ff",
        "aaa:bb:cc:dd:ee:f",
        "gg:bb:cc:dd:ee:ff",
        "+a:bb:cc:dd:ee:ff",
        "aa:bb:cc:dd:ee:ff:",
        " aa:bb:cc:dd:ee:ff",
    ] {
        assert!(bad.parse::<MacAddr>().is_err(), "{bad:?}");
    }
    assert!(serde_json::from_str::<MacAddr>("\"zz\"").is_err());
}

#[test]
fn mac_unicast_rules() {
    let ok: MacAddr = "02:42:ac:11:00:02".parse().unwrap();
    assert!(ok.validate_unicast().is_ok());
    for bad in ["01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "33:33:00:00:00:01", "00:00:00:00:00:00"] {
        let m: MacAddr = bad.parse().unwrap();
        assert!(m.validate_unicast().is_err(), "{bad}");
    }
}

#[test]
fn generated_macs_are_local_unicast_and_deterministic() {
    let mut seen = std::collections::HashSet::new();
    for i in 0..10_000 {
        let seed = format!("container-{i}");
        let m = MacAddr::locally_administered_from(seed.as_bytes());
        assert!(m.is_locally_administered() && !m.is_multicast(), "{m}");
        assert!(m.validate_unicast().is_ok());
        assert_eq!(m, MacAddr::locally_administered_from(seed.as_bytes()));
        assert!(seen.insert(m), "duplicate MAC for {seed}");
    }
    assert!(MacAddr::locally_administered_from(b"").validate_unicast().is_ok());
}

#[test]
fn endpoint_json_and_validation() {
    let e = Endpoint {
        tenant: "blue".into(),
        container_id: "c1".into(),
        host: "node1".into(),
        ip: "10.1.0.5".parse().unwrap(),
        mac: MacAddr::locally_administered_from(b"c1"),
        iface_id: "c1".into(),
        port: naming::container_port_name("c1", DEFAULT_IFNAME),
        ifname: DEFAULT_IFNAME.into(),
        machine_id: "m-1".into(),
        owner: None,
        publish: vec![],
    };
    assert_eq!(Endpoint::from_json(&e.to_json()).unwrap(), e);
    // No owner, no key: records stay as older agents read them.
    assert!(!String::from_utf8(e.to_json()).unwrap().contains("owner"));
    let mut owned = e.clone();
    owned.owner = Some("docker:0123abcd".into());
    assert_eq!(Endpoint::from_json(&owned.to_json()).unwrap(), owned);
    owned.owner = Some("docker 1".into());
    assert!(matches!(owned.validate(), Err(ModelError::InvalidOwner { .. })));
    assert!(!String::from_utf8(e.to_json()).unwrap().contains("publish"), "left out when empty");
    let mut published = e.clone();
    published.publish = vec!["8080:80/tcp".parse().unwrap(), "53:53/udp".parse().unwrap()];
    assert_eq!(Endpoint::from_json(&published.to_json()).unwrap(), published);
    published.publish.push("8080:81/tcp".parse().unwrap());
    assert!(Endpoint::from_json(&published.to_json()).is_err(), "one host port twice");
    // Records of agents before interfaces and machine ids existed still decode.
    let old = br#"{"tenant":"blue","container_id":"c1","host":"node1","ip":"10.1.0.5",
                  "mac":"02:00:00:00:00:01","iface_id":"c1","port":"tap0123456789ab"}"#;
    let old = Endpoint::from_json(old).unwrap();
    assert_eq!((old.ifname.as_str(), old.machine_id.as_str()), ("eth0", ""));
    let mut bad = e.clone();
    bad.ifname = "eth0/x".into();
    assert!(matches!(bad.validate(), Err(ModelError::InvalidInterfaceName { .. })));
    let mut bad = e.clone();
    bad.mac = "01:00:00:00:00:01".parse().unwrap();
    assert!(Endpoint::from_json(&bad.to_json()).is_err());
    let mut bad = e.clone();
    bad.port = "a-very-long-interface-name".into();
    assert!(matches!(bad.validate(), Err(ModelError::InvalidInterfaceName { .. })));
    let mut bad = e.clone();
    bad.iface_id = String::new();
    assert!(matches!(bad.validate(), Err(ModelError::InvalidIfaceId { .. })));
    let mut bad = e;
    bad.container_id = "x/y".into();
    assert!(bad.validate().is_err());
}
