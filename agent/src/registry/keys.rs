//! The key layout under the configured prefix (docs/design.md, "etcd layout"), and the one
//! parser of keys back into what they name.

use std::net::IpAddr;

use ipnet::IpNet;
use overlay::model::lease_key_segment;

/// Key layout under the configured prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// What a key under the root names ([`Keys::parse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'a> {
    /// `hosts/<host>`.
    Host(&'a str),
    /// `alive/<host>`.
    Alive(&'a str),
    /// `tenants/<tenant>`.
    Tenant(&'a str),
    /// `subnets/<tenant>/<segment>`.
    Subnet {
        /// The tenant of the key.
        tenant: &'a str,
        /// The subnet as written in the key ([`lease_key_segment`]).
        segment: &'a str,
    },
    /// `endpoints/...`: the record names its container and interface.
    Endpoint,
    /// Anything else under the root (`ips/`, `vnis/`, `underlays/`, keys of other tools).
    Other,
}

impl Keys {
    /// Keys under `prefix` (no trailing slash).
    pub fn new(prefix: &str) -> Self {
        Keys { prefix: prefix.trim_end_matches('/').to_owned() }
    }
    /// Everything the agents share.
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }
    /// Every key of one kind (`hosts/`, `endpoints/`, ...).
    pub fn kind(&self, kind: &str) -> String {
        format!("{}/{kind}", self.prefix)
    }
    pub(super) fn host(&self, h: &str) -> String {
        format!("{}/hosts/{h}", self.prefix)
    }
    pub(super) fn alive(&self, h: &str) -> String {
        format!("{}/alive/{h}", self.prefix)
    }
    pub(super) fn underlay(&self, ip: &IpAddr) -> String {
        format!("{}/underlays/{ip}", self.prefix)
    }
    pub(super) fn tenant(&self, t: &str) -> String {
        format!("{}/tenants/{t}", self.prefix)
    }
    pub(super) fn vni(&self, v: u32) -> String {
        format!("{}/vnis/{v}", self.prefix)
    }
    pub(super) fn subnets(&self, t: &str) -> String {
        format!("{}/subnets/{t}/", self.prefix)
    }
    pub(super) fn subnet(&self, t: &str, s: &IpNet) -> String {
        format!("{}/subnets/{t}/{}", self.prefix, lease_key_segment(s))
    }
    pub(super) fn endpoints(&self, t: &str) -> String {
        format!("{}/endpoints/{t}/", self.prefix)
    }
    /// One container interface's record. Records of agents before interfaces existed sit at
    /// `endpoints/<tenant>/<container>`; the cache keeps every record's own key, so those are
    /// still found and removed by theirs.
    pub(super) fn endpoint(&self, t: &str, container: &str, ifname: &str) -> String {
        format!("{}/endpoints/{t}/{container}/{ifname}", self.prefix)
    }
    pub(super) fn ips(&self, t: &str) -> String {
        format!("{}/ips/{t}/", self.prefix)
    }
    pub(super) fn ip(&self, t: &str, ip: &IpAddr) -> String {
        format!("{}/ips/{t}/{ip}", self.prefix)
    }

    /// What `key` names; `None` for a key outside the root.
    pub fn parse<'a>(&self, key: &'a str) -> Option<Key<'a>> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let (kind, name) = rest.split_once('/').unwrap_or((rest, ""));
        Some(match kind {
            "hosts" => Key::Host(name),
            "alive" => Key::Alive(name),
            "tenants" => Key::Tenant(name),
            "subnets" => {
                let (tenant, segment) = name.rsplit_once('/').unwrap_or(("", name));
                Key::Subnet { tenant, segment }
            }
            "endpoints" => Key::Endpoint,
            _ => Key::Other,
        })
    }
}

/// The end of the key range of every key that starts with `prefix` (etcd's prefix rule).
pub(super) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }

    #[test]
    fn keys_parse_back_to_what_they_name() {
        let k = Keys::new("/overlay/");
        assert_eq!(k.parse(&k.host("h1")), Some(Key::Host("h1")));
        assert_eq!(k.parse(&k.alive("h1")), Some(Key::Alive("h1")));
        assert_eq!(k.parse(&k.tenant("red")), Some(Key::Tenant("red")));
        let net: IpNet = "198.19.3.0/24".parse().unwrap();
        assert_eq!(k.parse(&k.subnet("red", &net)), Some(Key::Subnet { tenant: "red", segment: "198.19.3.0-24" }));
        assert_eq!(k.parse(&k.endpoint("red", "c1", "eth0")), Some(Key::Endpoint));
        assert_eq!(k.parse(&k.ip("red", &"198.19.0.2".parse().unwrap())), Some(Key::Other));
        assert_eq!(k.parse("/overlayx/hosts/h1"), None);
        assert_eq!(k.parse("/other/hosts/h1"), None);
    }
}
