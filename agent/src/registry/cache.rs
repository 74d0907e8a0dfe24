//! The cluster as the registry shows it, kept by the watch: pure data, no etcd calls.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use overlay::model::{parse_lease_key_segment, Endpoint, HostRecord, SubnetLease, Tenant};

use super::keys::{Key, Keys};

/// The cluster as the registry shows it, kept by the watch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterCache {
    /// Registered hosts.
    pub hosts: BTreeMap<String, HostRecord>,
    /// Hosts whose liveness key exists.
    pub alive: BTreeSet<String>,
    /// Tenants.
    pub tenants: BTreeMap<String, Tenant>,
    /// Subnet leases.
    pub leases: Leases,
    /// Endpoints, by key and by host.
    pub endpoints: Endpoints,
    /// etcd revision this view is at.
    pub revision: i64,
    /// A stamp taken at every change of what a host's bridges are computed from (hosts,
    /// tenants, leases; not endpoints, not liveness): equal stamps, equal bridges. Stamps come
    /// from one counter for the whole process, so a cache listed afresh never repeats one.
    pub topology: u64,
}

/// The source of [`ClusterCache::topology`] stamps.
fn next_stamp() -> u64 {
    static STAMPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    STAMPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl ClusterCache {
    /// Applies a put (value) or delete (`None`) of `key`; garbage values are logged and
    /// treated as absent, so one bad write cannot stop the agent.
    pub fn apply(&mut self, keys: &Keys, key: &str, value: Option<&[u8]>) {
        fn upsert<V, E: std::fmt::Display>(
            map: &mut BTreeMap<String, V>,
            key: &str,
            name: &str,
            decoded: Option<Result<V, E>>,
        ) {
            match decoded {
                Some(Ok(v)) => {
                    map.insert(name.to_owned(), v);
                }
                Some(Err(e)) => {
                    tracing::warn!(key, error = %e, "ignoring malformed value in etcd");
                    map.remove(name);
                }
                None => {
                    map.remove(name);
                }
            }
        }
        let parsed = keys.parse(key);
        if matches!(parsed, Some(Key::Host(_) | Key::Tenant(_) | Key::Subnet { .. })) {
            self.topology = next_stamp();
        }
        match parsed {
            Some(Key::Host(name)) => {
                let decoded = value.map(|b| {
                    HostRecord::from_json(b).and_then(|h| {
                        if h.hostname == name {
                            Ok(h)
                        } else {
                            Err(overlay::error::ModelError::InvalidHostname {
                                name: format!("{} under key {name}", h.hostname),
                            })
                        }
                    })
                });
                upsert(&mut self.hosts, key, name, decoded);
            }
            Some(Key::Alive(name)) => {
                if value.is_some() {
                    self.alive.insert(name.to_owned());
                } else {
                    self.alive.remove(name);
                }
            }
            Some(Key::Tenant(name)) => upsert(&mut self.tenants, key, name, value.map(Tenant::from_json)),
            Some(Key::Subnet { tenant, segment }) => {
                let subnet = parse_lease_key_segment(segment);
                let decoded = value.map(|b| {
                    let lease = SubnetLease::from_json(b)?;
                    if subnet.as_ref().ok() != Some(&lease.subnet) {
                        return Err(overlay::error::ModelError::InvalidLeaseKey { input: key.to_owned() });
                    }
                    Ok(lease)
                });
                match decoded {
                    Some(Ok(lease)) => self.leases.insert(tenant, lease),
                    other => {
                        if let Some(Err(e)) = other {
                            tracing::warn!(key, error = %e, "ignoring malformed value in etcd");
                        }
                        if let Ok(subnet) = subnet {
                            self.leases.remove(tenant, &subnet);
                        }
                    }
                }
            }
            Some(Key::Endpoint) => match value.map(Endpoint::from_json) {
                Some(Ok(e)) => self.endpoints.insert(key, e),
                Some(Err(e)) => {
                    tracing::warn!(key, error = %e, "ignoring malformed value in etcd");
                    self.endpoints.remove(key);
                }
                None => self.endpoints.remove(key),
            },
            Some(Key::Other) | None => {}
        }
    }

    /// Leases of tenants that exist and fit them (a lease that does not fit its tenant is
    /// ignored with a warning by the caller's view).
    pub fn valid_leases(&self) -> Vec<SubnetLease> {
        self.leases.iter().filter(|l| self.tenants.get(&l.tenant).is_some_and(|t| l.validate_for(t).is_ok())).collect()
    }
}

/// Endpoint records by key, with an index by host (a plug reads its own host's records from
/// here, whatever the size of the cluster) and one by tenant (a pass builds again only the
/// flows of tenants whose records changed). The indexes share the keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Endpoints {
    by_key: BTreeMap<Arc<str>, Endpoint>,
    by_host: HashMap<String, BTreeSet<Arc<str>>>,
    by_tenant: HashMap<String, TenantRecords>,
}

/// The keys of one tenant's records, and a stamp (see [`ClusterCache::topology`]) taken
/// whenever one of them comes, changes or goes.
#[derive(Debug, Clone, Default, PartialEq)]
struct TenantRecords {
    stamp: u64,
    keys: BTreeSet<Arc<str>>,
}

impl Endpoints {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Every record with its key, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Endpoint)> {
        self.by_key.iter().map(|(k, e)| (&**k, e))
    }

    /// The records of `host`, with their keys.
    pub fn of_host<'a>(&'a self, host: &str) -> impl Iterator<Item = (&'a str, &'a Endpoint)> + 'a {
        self.resolve(self.by_host.get(host))
    }

    /// The records of `tenant` (by their own tenant field), with their keys.
    pub fn of_tenant<'a>(&'a self, tenant: &str) -> impl Iterator<Item = (&'a str, &'a Endpoint)> + 'a {
        self.resolve(self.by_tenant.get(tenant).map(|t| &t.keys))
    }

    /// The stamp of `tenant`'s records: the same as long as none of them changed (0: it has
    /// none).
    pub fn tenant_stamp(&self, tenant: &str) -> u64 {
        self.by_tenant.get(tenant).map_or(0, |t| t.stamp)
    }

    fn resolve<'a>(
        &'a self,
        keys: Option<&'a BTreeSet<Arc<str>>>,
    ) -> impl Iterator<Item = (&'a str, &'a Endpoint)> + 'a {
        keys.into_iter().flatten().filter_map(|k| self.by_key.get_key_value(k).map(|(k, e)| (&**k, e)))
    }

    fn insert(&mut self, key: &str, e: Endpoint) {
        self.remove(key);
        let key: Arc<str> = Arc::from(key);
        self.by_host.entry(e.host.clone()).or_default().insert(key.clone());
        let tenant = self.by_tenant.entry(e.tenant.clone()).or_default();
        tenant.stamp = next_stamp();
        tenant.keys.insert(key.clone());
        self.by_key.insert(key, e);
    }

    fn remove(&mut self, key: &str) {
        let Some(old) = self.by_key.remove(key) else { return };
        if let Some(keys) = self.by_host.get_mut(&old.host) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_host.remove(&old.host);
            }
        }
        if let Some(tenant) = self.by_tenant.get_mut(&old.tenant) {
            tenant.keys.remove(key);
            tenant.stamp = next_stamp();
            if tenant.keys.is_empty() {
                self.by_tenant.remove(&old.tenant);
            }
        }
    }
}

/// The subnet leases of the cluster, by etcd key (`subnets/<tenant>/<subnet>`).
///
/// Kept compactly because there is one per (host, tenant): 20,000 of them, as `SubnetLease`
/// values under their full keys, held 5 MiB in 60,000 allocations (heaptrack, scale
/// benchmark). Here a lease is a few dozen bytes in the map's nodes, and the tenant and host
/// names, which every lease repeats, are shared. `SubnetLease` values are made on demand.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Leases {
    by_key: BTreeMap<(Arc<str>, IpNet), Lease>,
    names: HashSet<Arc<str>>,
    /// Size of `names` after the last purge.
    names_live: usize,
}

#[derive(Debug, Clone, PartialEq)]
struct Lease {
    /// The lease's own tenant field (its key's tenant, unless the record is inconsistent).
    tenant: Arc<str>,
    host: Arc<str>,
    underlay_ip: IpAddr,
}

impl Leases {
    /// Number of leases.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Every lease, in key order.
    pub fn iter(&self) -> impl Iterator<Item = SubnetLease> + '_ {
        self.by_key.iter().map(|((_, subnet), l)| SubnetLease {
            tenant: l.tenant.to_string(),
            subnet: *subnet,
            host: l.host.to_string(),
            underlay_ip: l.underlay_ip,
        })
    }

    /// The lease `host` holds in `tenant`, if any.
    pub fn held_by(&self, tenant: &str, host: &str) -> Option<SubnetLease> {
        let tenant: Arc<str> = Arc::from(tenant);
        let first = (tenant.clone(), IpNet::V4(Default::default()));
        self.by_key
            .range(first..)
            .take_while(|((t, _), _)| *t == tenant)
            .find(|(_, l)| &*l.host == host && l.tenant == tenant)
            .map(|((_, subnet), l)| SubnetLease {
                tenant: l.tenant.to_string(),
                subnet: *subnet,
                host: l.host.to_string(),
                underlay_ip: l.underlay_ip,
            })
    }

    fn name(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.names.get(s) {
            return shared.clone();
        }
        let new: Arc<str> = Arc::from(s);
        self.names.insert(new.clone());
        new
    }

    /// Stores `lease` under the key `subnets/<key_tenant>/<lease.subnet>`.
    fn insert(&mut self, key_tenant: &str, lease: SubnetLease) {
        let key = (self.name(key_tenant), lease.subnet);
        let value =
            Lease { tenant: self.name(&lease.tenant), host: self.name(&lease.host), underlay_ip: lease.underlay_ip };
        self.by_key.insert(key, value);
    }

    fn remove(&mut self, key_tenant: &str, subnet: &IpNet) {
        self.by_key.remove(&(Arc::from(key_tenant), *subnet));
        // Names of hosts that left go once the set has doubled since the last purge.
        if self.names.len() >= 2 * self.names_live.max(1024) {
            self.names.retain(|n| Arc::strong_count(n) > 1);
            self.names_live = self.names.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_skips_garbage_and_applies_deletes() {
        let keys = Keys::new("/overlay");
        let mut cache = ClusterCache::default();
        cache.apply(&keys, "/overlay/tenants/a", Some(b"{not json"));
        assert!(cache.tenants.is_empty());
        let t = Tenant::new(
            "a",
            overlay::model::Vni::new(5).unwrap(),
            "198.19.0.0/16".parse().unwrap(),
            overlay::model::TunnelType::Vxlan,
            24,
        )
        .unwrap();
        cache.apply(&keys, "/overlay/tenants/a", Some(&t.to_json()));
        assert_eq!(cache.tenants.len(), 1);
        cache.apply(&keys, "/overlay/tenants/a", Some(b"[]"));
        assert!(cache.tenants.is_empty(), "a garbage overwrite removes the tenant from the view");
        cache.apply(&keys, "/overlay/alive/h1", Some(b"1"));
        assert!(cache.alive.contains("h1"));
        cache.apply(&keys, "/overlay/alive/h1", None);
        assert!(cache.alive.is_empty());
        cache.apply(&keys, "/elsewhere/tenants/a", Some(&t.to_json()));
        assert!(cache.tenants.is_empty());
    }

    #[test]
    fn leases_by_key_with_shared_names() {
        let keys = Keys::new("/overlay");
        let mut cache = ClusterCache::default();
        let lease = |tenant: &str, subnet: &str, host: &str| SubnetLease {
            tenant: tenant.into(),
            subnet: subnet.parse().unwrap(),
            host: host.into(),
            underlay_ip: "192.0.2.1".parse().unwrap(),
        };
        let put = |cache: &mut ClusterCache, key: &str, l: &SubnetLease| {
            cache.apply(&keys, &format!("/overlay/subnets/{key}"), Some(&l.to_json()))
        };
        let red = lease("red", "10.1.2.0/24", "h1");
        put(&mut cache, "red/10.1.2.0-24", &red);
        put(&mut cache, "red/10.1.3.0-24", &lease("red", "10.1.3.0/24", "h2"));
        put(&mut cache, "redx/10.1.4.0-24", &lease("redx", "10.1.4.0/24", "h3"));
        // A key whose subnet is not the record's, or is not a subnet at all, is no lease.
        put(&mut cache, "red/10.1.9.0-24", &lease("red", "10.1.5.0/24", "h4"));
        put(&mut cache, "red/garbage", &lease("red", "10.1.6.0/24", "h5"));
        assert_eq!(cache.leases.len(), 3);
        assert_eq!(cache.leases.held_by("red", "h1"), Some(red.clone()));
        assert_eq!(cache.leases.held_by("red", "h3"), None, "h3 holds a lease in redx, not red");
        assert_eq!(cache.leases.held_by("blue", "h1"), None);
        let all: Vec<SubnetLease> = cache.leases.iter().collect();
        assert_eq!(all.first(), Some(&red));
        let (a, b) =
            (&cache.leases.by_key.values().next().unwrap().tenant, &cache.leases.by_key.keys().nth(1).unwrap().0);
        assert!(Arc::ptr_eq(a, b), "tenant names are shared");
        // A bad overwrite and a delete both remove the lease.
        cache.apply(&keys, "/overlay/subnets/red/10.1.2.0-24", Some(b"{"));
        assert_eq!(cache.leases.held_by("red", "h1"), None);
        cache.apply(&keys, "/overlay/subnets/red/10.1.3.0-24", None);
        assert_eq!(cache.leases.len(), 1);
    }

    fn endpoint(container: &str, tenant: &str, host: &str) -> Endpoint {
        Endpoint {
            tenant: tenant.into(),
            container_id: container.into(),
            ifname: "eth0".into(),
            machine_id: "m".into(),
            host: host.into(),
            ip: "198.19.0.2".parse().unwrap(),
            mac: "02:00:00:00:00:01".parse().unwrap(),
            iface_id: container.into(),
            port: "tap0123456789ab".into(),
            owner: None,
            publish: vec![],
        }
    }

    #[test]
    fn endpoints_are_indexed_by_host_and_follow_moves_and_deletes() {
        let keys = Keys::new("/overlay");
        let mut cache = ClusterCache::default();
        let ep = |c: &str, host: &str| endpoint(c, "red", host);
        cache.apply(&keys, "/overlay/endpoints/red/a/eth0", Some(&ep("a", "h1").to_json()));
        cache.apply(&keys, "/overlay/endpoints/red/b/eth0", Some(&ep("b", "h2").to_json()));
        cache.apply(&keys, "/overlay/endpoints/red/c", Some(&ep("c", "h1").to_json()));
        let of = |cache: &ClusterCache, h: &str| -> Vec<String> {
            cache.endpoints.of_host(h).map(|(k, _)| k.to_owned()).collect()
        };
        assert_eq!(of(&cache, "h1"), ["/overlay/endpoints/red/a/eth0", "/overlay/endpoints/red/c"]);
        cache.apply(&keys, "/overlay/endpoints/red/a/eth0", Some(&ep("a", "h2").to_json()));
        assert_eq!(of(&cache, "h1"), ["/overlay/endpoints/red/c"]);
        assert_eq!(of(&cache, "h2").len(), 2);
        cache.apply(&keys, "/overlay/endpoints/red/c", Some(b"garbage"));
        assert!(of(&cache, "h1").is_empty());
        cache.apply(&keys, "/overlay/endpoints/red/b/eth0", None);
        assert_eq!(of(&cache, "h2"), ["/overlay/endpoints/red/a/eth0"]);
        assert_eq!(cache.endpoints.len(), 1);
    }

    #[test]
    fn stamps_change_with_what_they_cover_and_nothing_else() {
        let keys = Keys::new("/overlay");
        let mut cache = ClusterCache::default();
        let ep = |c: &str, tenant: &str| endpoint(c, tenant, "h1");
        let tenant = br#"{"name":"red","vni":7,"cidr":"198.19.0.0/16"}"#;
        cache.apply(&keys, "/overlay/tenants/red", Some(tenant));
        let topology = cache.topology;
        assert_ne!(topology, 0, "a tenant is part of the topology");
        cache.apply(&keys, "/overlay/endpoints/red/a/eth0", Some(&ep("a", "red").to_json()));
        cache.apply(&keys, "/overlay/alive/h1", Some(b"1"));
        assert_eq!(cache.topology, topology, "endpoints and liveness are not");
        let red = cache.endpoints.tenant_stamp("red");
        assert_ne!(red, 0);
        assert_eq!(cache.endpoints.tenant_stamp("blue"), 0, "no records, no stamp");
        cache.apply(&keys, "/overlay/endpoints/red/a/eth0", Some(&ep("a", "blue").to_json()));
        assert_ne!(cache.endpoints.tenant_stamp("blue"), 0);
        assert_eq!(cache.endpoints.tenant_stamp("red"), 0, "a record moved to another tenant leaves red empty");
        assert_eq!(cache.endpoints.of_tenant("blue").count(), 1);
        assert_eq!(cache.endpoints.of_tenant("red").count(), 0);
        let blue = cache.endpoints.tenant_stamp("blue");
        cache.apply(&keys, "/overlay/endpoints/red/b/eth0", Some(&ep("b", "red").to_json()));
        assert_eq!(cache.endpoints.tenant_stamp("blue"), blue, "another tenant's record leaves blue's stamp");
        cache.apply(&keys, "/overlay/endpoints/red/a/eth0", None);
        assert_ne!(cache.endpoints.tenant_stamp("blue"), blue);
        // A cache listed afresh never repeats a stamp the agent may have remembered.
        let mut relisted = ClusterCache::default();
        relisted.apply(&keys, "/overlay/tenants/red", Some(tenant));
        assert!(relisted.topology > cache.topology);
    }
}
