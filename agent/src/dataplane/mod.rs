//! The boundary between the desired state and what realises it. The daemon hands a pass the
//! cluster as watched and this host's own leases; the data plane makes the switch match and
//! reports what `status` shows. Status, the registry and the plug path know only this module's
//! [`Report`] and [`DataPlane::tenant_vlan`], not how the data plane is built.
//!
//! The data plane here builds one tunnel port per (peer, tenant) ([`ports`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use overlay::model::{SubnetLease, TunnelType};
use tokio::sync::watch;

use crate::registry::ClusterCache;

mod ports;

pub use ports::{Memo, PassError, PortDataPlane as DataPlane};

/// What a pass works from.
pub struct PassInput<'a> {
    /// OVSDB.
    pub ovs: &'a ovsdb_client::Client,
    /// The cluster as watched.
    pub cluster: &'a watch::Receiver<ClusterCache>,
    /// Leases this agent took that the watch may not show yet.
    pub own_leases: BTreeMap<String, SubnetLease>,
    /// Compare everything afresh (the periodic resync), whatever earlier passes found.
    pub full: bool,
}

/// What a pass did and found.
pub struct PassOutcome {
    /// OVSDB transactions sent (0: the switch was in step).
    pub transactions: usize,
    /// What status shows.
    pub report: Report,
}

/// What the data plane built, for `status` and the metrics.
#[derive(Default)]
pub struct Report {
    /// Local VLAN of every tenant this host takes part in.
    pub tenant_vlans: BTreeMap<String, u16>,
    /// The tunnel ports.
    pub tunnels: TunnelList,
    /// Peers left out, and why.
    pub skipped: Vec<String>,
    /// What cannot be built because something else is in the way.
    pub conflicts: Vec<String>,
    /// Peers with at least one tunnel.
    pub peers: usize,
}

/// The tunnels as `status` lists them. Kept as plain data and turned into JSON only when
/// `status` is asked: as JSON objects, 20,000 tunnels held 13.7 MiB between passes (heaptrack,
/// scale benchmark). The names are in one buffer and peer and tenant names, which many tunnels
/// repeat, are shared: the list is rebuilt by every pass, and tens of thousands of small
/// allocations made in the middle of a pass's temporary memory keep its pages from being
/// given back.
#[derive(Default)]
pub struct TunnelList {
    names: String,
    tunnels: Vec<TunnelStatus>,
}

struct TunnelStatus {
    /// Where the name is in [`TunnelList::names`].
    name: std::ops::Range<u32>,
    peer: Arc<str>,
    tenant: Arc<str>,
    vni: u32,
    tunnel: TunnelType,
    remote_ip: std::net::IpAddr,
    local_vlan: u16,
}

impl TunnelList {
    /// How many tunnels.
    pub fn len(&self) -> usize {
        self.tunnels.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.tunnels.is_empty()
    }

    /// The list of `tunnels`, for status.
    pub fn new(tunnels: &[overlay::desired::TunnelPortSpec]) -> TunnelList {
        fn shared<'a>(names: &mut std::collections::HashMap<&'a str, Arc<str>>, s: &'a str) -> Arc<str> {
            names.entry(s).or_insert_with(|| Arc::from(s)).clone()
        }
        let mut shared_names = std::collections::HashMap::new();
        let mut names = String::with_capacity(tunnels.iter().map(|t| t.name.len()).sum());
        let tunnels = tunnels
            .iter()
            .map(|t| {
                let start = names.len() as u32;
                names.push_str(&t.name);
                TunnelStatus {
                    name: start..names.len() as u32,
                    peer: shared(&mut shared_names, &t.peer),
                    tenant: shared(&mut shared_names, &t.tenant),
                    vni: t.vni.get(),
                    tunnel: t.tunnel,
                    remote_ip: t.remote_ip,
                    local_vlan: t.local_vlan,
                }
            })
            .collect();
        TunnelList { names, tunnels }
    }
}

impl serde::Serialize for TunnelList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct One<'a>(&'a str, &'a TunnelStatus);
        impl serde::Serialize for One<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let (name, t) = (self.0, self.1);
                let mut m = s.serialize_map(Some(7))?;
                m.serialize_entry("name", name)?;
                m.serialize_entry("peer", &*t.peer)?;
                m.serialize_entry("tenant", &*t.tenant)?;
                m.serialize_entry("vni", &t.vni)?;
                m.serialize_entry("type", t.tunnel.as_str())?;
                m.serialize_entry("remote_ip", &t.remote_ip)?;
                m.serialize_entry("local_vlan", &t.local_vlan)?;
                m.end()
            }
        }
        let mut seq = s.serialize_seq(Some(self.tunnels.len()))?;
        for t in &self.tunnels {
            seq.serialize_element(&One(&self.names[t.name.start as usize..t.name.end as usize], t))?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_tunnels_share_names_and_keep_their_json() {
        let spec = |tenant: &str, vni: u32| overlay::desired::TunnelPortSpec {
            name: format!("vx-{vni}"),
            tenant: tenant.into(),
            vni: overlay::model::Vni::new(vni).unwrap(),
            peer: "peer-1".into(),
            remote_ip: "10.0.0.2".parse().unwrap(),
            local_ip: "10.0.0.1".parse().unwrap(),
            tunnel: TunnelType::Vxlan,
            local_vlan: 3,
        };
        let list = TunnelList::new(&[spec("red", 100), spec("blue", 200)]);
        assert!(Arc::ptr_eq(&list.tunnels[0].peer, &list.tunnels[1].peer));
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            json!([{"name": "vx-100", "peer": "peer-1", "tenant": "red", "vni": 100, "type": "vxlan",
                    "remote_ip": "10.0.0.2", "local_vlan": 3},
                   {"name": "vx-200", "peer": "peer-1", "tenant": "blue", "vni": 200, "type": "vxlan",
                    "remote_ip": "10.0.0.2", "local_vlan": 3}])
        );
    }
}
