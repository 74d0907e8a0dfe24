//! The ADD result (CNI spec 1.0.0, with the 1.1.0 interface MTU when the configuration speaks
//! 1.1.0), and reading back what CHECK needs from `prevResult`.

use std::net::IpAddr;
use std::path::Path;

use overlay_api::PlugResult;
use serde_json::{json, Value};

use crate::config::NetConf;
use crate::error::{CniError, Code};

/// The result of an ADD: the host end and the container interface, its address with the
/// tenant's prefix and gateway, the default route, and the configured DNS.
pub fn add_result(conf: &NetConf, netns: &Path, plugged: &PlugResult) -> Value {
    let mut container = json!({"name": plugged.ifname, "mac": plugged.mac, "sandbox": netns});
    if conf.cni_version != "1.0.0" {
        container["mtu"] = json!(plugged.mtu);
    }
    let default = if plugged.ip.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
    let mut result = json!({
        "cniVersion": conf.cni_version,
        "interfaces": [{"name": plugged.port}, container],
        "ips": [{"address": format!("{}/{}", plugged.ip, plugged.prefix), "gateway": plugged.gateway, "interface": 1}],
        "routes": [{"dst": default, "gw": plugged.gateway}],
    });
    if let Some(dns) = &conf.dns {
        result["dns"] = dns.clone();
    }
    result
}

/// What the previous ADD gave interface `ifname`: its address and MAC.
pub fn previous(prev: &Value, ifname: &str) -> Result<(IpAddr, Option<String>), CniError> {
    let bad = |what: &str| {
        CniError::new(Code::DecodingFailure, "cannot read prevResult", format!("{what}; prevResult is {prev}"))
    };
    let interfaces = prev.get("interfaces").and_then(Value::as_array).cloned().unwrap_or_default();
    let index = interfaces.iter().position(|i| {
        i["name"] == ifname && i.get("sandbox").is_some_and(|s| s.as_str().is_some_and(|s| !s.is_empty()))
    });
    let ips = prev.get("ips").and_then(Value::as_array).ok_or_else(|| bad("it has no ips"))?;
    let ip = ips
        .iter()
        .find(|a| index.is_none() || a.get("interface").and_then(Value::as_u64) == index.map(|i| i as u64))
        .and_then(|a| a["address"].as_str())
        .ok_or_else(|| bad(&format!("no address for {ifname}")))?;
    let ip = ip.split('/').next().unwrap_or_default().parse().map_err(|_| bad(&format!("'{ip}' is not an address")))?;
    let mac = index.and_then(|i| interfaces[i]["mac"].as_str().map(str::to_owned));
    Ok((ip, mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(version: &str, dns: Option<Value>) -> NetConf {
        NetConf {
            cni_version: version.into(),
            name: "red".into(),
            tenant: "red".into(),
            agent_socket: "/x".into(),
            dns,
            prev_result: None,
            valid_attachments: vec![],
            publish: vec![],
        }
    }

    fn plugged() -> PlugResult {
        PlugResult {
            ip: "198.19.1.2".parse().unwrap(),
            prefix: 16,
            mac: "02:aa:00:00:00:01".into(),
            gateway: "198.19.0.1".parse().unwrap(),
            mtu: 1450,
            port: "tap0123456789ab".into(),
            tenant: "red".into(),
            ifname: "eth0".into(),
            handoff: None,
            publish: vec![],
        }
    }

    #[test]
    fn the_result_has_the_interface_address_route_and_dns_and_reads_back() {
        let dns = json!({"nameservers": ["198.19.0.53"], "search": ["example"]});
        let r = add_result(&conf("1.1.0", Some(dns.clone())), Path::new("/run/netns/c1"), &plugged());
        assert_eq!(
            r["interfaces"][1],
            json!({"name": "eth0", "mac": "02:aa:00:00:00:01", "sandbox": "/run/netns/c1", "mtu": 1450})
        );
        assert_eq!(r["ips"][0], json!({"address": "198.19.1.2/16", "gateway": "198.19.0.1", "interface": 1}));
        assert_eq!(r["routes"], json!([{"dst": "0.0.0.0/0", "gw": "198.19.0.1"}]));
        assert_eq!(r["dns"], dns);
        let (ip, mac) = previous(&r, "eth0").unwrap();
        assert_eq!((ip.to_string(), mac.as_deref()), ("198.19.1.2".into(), Some("02:aa:00:00:00:01")));
        // 1.0.0 has no interface MTU, and no dns key unless configured.
        let r = add_result(&conf("1.0.0", None), Path::new("/run/netns/c1"), &plugged());
        assert!(r["interfaces"][1].get("mtu").is_none() && r.get("dns").is_none());
        assert_eq!(previous(&json!({"ips": []}), "eth0").unwrap_err().code, Code::DecodingFailure);
    }
}
