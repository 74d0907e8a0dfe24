//! Multi-host topology, as in `shared/lab/overlay-lab.sh`: an underlay Linux bridge in a fabric
//! namespace, and hosts (namespaces with their own ovsdb-server + ovs-vswitchd and `br-phy`).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use crate::names::unique_name;
use crate::netns::Netns;
use crate::require::require_ovs;
use crate::sweep::{claims_dir, Claim};
use crate::{OvsdbServer, Vswitchd};

/// Prefix length of the underlay subnet.
pub const UNDERLAY_PREFIX_LEN: u8 = 24;

/// X of 198.18.X.0/24, never an underlay: the "outside" network (beyond every underlay and
/// tenant range) that tests route through a fabric.
pub const OUTSIDE_OCTET: u8 = 100;

/// The third octet X of an underlay subnet 198.18.X.0/24, unique on this machine while held.
struct SubnetClaim {
    octet: u8,
    _claim: Claim,
}

impl SubnetClaim {
    fn acquire() -> Self {
        let start = (u64::from(std::process::id()) * 31 + crate::names::next_counter()) % 254;
        for i in 0..254u64 {
            let octet = ((start + i) % 254 + 1) as u8;
            // 198.18.100.0/24 is the "outside" network tests route through a fabric.
            if octet == OUTSIDE_OCTET {
                continue;
            }
            if let Some(claim) = Claim::try_acquire(&format!("subnet-198.18.{octet}")) {
                return SubnetClaim { octet, _claim: claim };
            }
        }
        panic!(
            "testbed: all 254 underlay subnets 198.18.1-254.0/24 are claimed (files in {}); \
             too many fabrics alive at once?",
            claims_dir().display()
        );
    }
}

struct FabricInner {
    netns: Netns,
    claim: SubnetClaim,
    hosts: Mutex<HashSet<u8>>,
}

/// The underlay: a namespace `fab-tb<pid>-<n>` holding a Linux bridge `br0` (up), and a /24 of
/// 198.18.0.0/16 claimed for it (198.18.X.0/24, X unique among the fabrics alive on the machine).
///
/// Cheap to clone (shared). The namespace lives until the `Fabric` and all its [`TestHost`]s are
/// dropped.
#[derive(Clone)]
pub struct Fabric {
    inner: Arc<FabricInner>,
}

impl Fabric {
    /// Creates the fabric namespace and its bridge.
    #[track_caller]
    pub fn new() -> Self {
        require_ovs();
        let netns = Netns::new("fab");
        netns.ip(&["link", "add", "br0", "type", "bridge"]);
        netns.ip(&["link", "set", "br0", "up"]);
        Fabric {
            inner: Arc::new(FabricInner { netns, claim: SubnetClaim::acquire(), hosts: Mutex::new(HashSet::new()) }),
        }
    }

    /// The fabric namespace (holds `br0` and the fabric ends of the hosts' veths).
    pub fn netns(&self) -> &Netns {
        &self.inner.netns
    }

    /// X of the underlay subnet 198.18.X.0/24.
    pub fn subnet_octet(&self) -> u8 {
        self.inner.claim.octet
    }

    /// The underlay subnet, "198.18.X.0/24".
    pub fn underlay_cidr(&self) -> String {
        format!("198.18.{}.0/{UNDERLAY_PREFIX_LEN}", self.subnet_octet())
    }

    /// Underlay IP of host `index`: 198.18.X.index.
    pub fn underlay_ip(&self, index: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.subnet_octet(), index)
    }

    /// Adds host `index` (1..=254, unique among this fabric's live hosts), as overlay-lab.sh does:
    /// - a namespace `h<index>-tb<pid>-<n>` with `lo` up;
    /// - a veth pair: `eth1` in the host, the other end (unique name) on the fabric's `br0`;
    /// - a private ovsdb-server and ovs-vswitchd running inside the host namespace;
    /// - `Open_vSwitch` `external_ids:hostname` and `external_ids:system-id` set to
    ///   [`TestHost::name`] (as Debian's ovs-ctl would set them);
    /// - bridge `br-phy` (`datapath_type=netdev`, `other_config:hwaddr` = eth1's MAC) holding
    ///   `eth1`, with the underlay IP 198.18.X.index/24, up.
    ///
    /// No br-int / br-tun: the agent under test makes them.
    #[track_caller]
    pub fn add_host(&self, index: u8) -> TestHost {
        assert!((1..=254).contains(&index), "testbed: host index must be 1..=254, got {index}");
        assert!(
            self.inner.hosts.lock().unwrap_or_else(|e| e.into_inner()).insert(index),
            "testbed: host {index} already exists in this fabric"
        );
        // From here on a panic must release the index; the host keeps the guard.
        let slot = IndexGuard { fabric: self.inner.clone(), index };
        let name = format!("host{index}-{}", unique_name(""));
        let netns = Netns::new(&format!("h{index}"));
        let fab = &self.inner.netns;
        let fab_end = unique_name("vf");
        fab.ip(&["link", "add", &fab_end, "type", "veth", "peer", "name", "eth1", "netns", netns.name()]);
        fab.ip(&["link", "set", &fab_end, "master", "br0"]);
        fab.ip(&["link", "set", &fab_end, "up"]);
        netns.ip(&["link", "set", "eth1", "up"]);

        let ovsdb = OvsdbServer::start_in(Some(netns.name()));
        let vswitchd = Vswitchd::start(&ovsdb, Some(netns.name()));
        ovsdb.vsctl(&[
            "set",
            "Open_vSwitch",
            ".",
            &format!("external_ids:hostname={name}"),
            &format!("external_ids:system-id={name}"),
        ]);
        let mac = netns.mac("eth1");
        ovsdb.vsctl_wait(&[
            "add-br",
            "br-phy",
            "--",
            "set",
            "bridge",
            "br-phy",
            "datapath_type=netdev",
            &format!("other_config:hwaddr=\"{mac}\""),
            "--",
            "add-port",
            "br-phy",
            "eth1",
        ]);
        let ip = self.underlay_ip(index);
        crate::wait_until(std::time::Duration::from_secs(10), &format!("br-phy to appear in {}", netns.name()), || {
            netns.has_link("br-phy")
        });
        netns.ip(&["addr", "add", &format!("{ip}/{UNDERLAY_PREFIX_LEN}"), "dev", "br-phy"]);
        netns.ip(&["link", "set", "br-phy", "up"]);
        TestHost { vswitchd, ovsdb, netns, name, ip, slot }
    }
}

impl Default for Fabric {
    fn default() -> Self {
        Self::new()
    }
}

/// Holds a host index of a fabric (and the fabric itself); releases the index on drop.
struct IndexGuard {
    fabric: Arc<FabricInner>,
    index: u8,
}

impl Drop for IndexGuard {
    fn drop(&mut self) {
        self.fabric.hosts.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.index);
    }
}

/// A test host made by [`Fabric::add_host`]: a namespace with `eth1` on the fabric, a private
/// ovsdb-server + ovs-vswitchd (userspace datapath) and `br-phy` carrying the underlay IP.
///
/// Drop order: ovs-vswitchd, ovsdb-server (both killed), the namespace (deleted, which removes
/// the veth pair and the datapath's tap devices), then its hold on the fabric.
pub struct TestHost {
    vswitchd: Vswitchd,
    ovsdb: OvsdbServer,
    netns: Netns,
    name: String,
    ip: Ipv4Addr,
    slot: IndexGuard,
}

impl TestHost {
    /// Hostname for the agent: `host<index>-<unique>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Index in the fabric (last octet of the underlay IP).
    pub fn index(&self) -> u8 {
        self.slot.index
    }

    /// The host namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The host's ovsdb-server.
    pub fn ovsdb(&self) -> &OvsdbServer {
        &self.ovsdb
    }

    /// The host's ovs-vswitchd.
    pub fn vswitchd(&self) -> &Vswitchd {
        &self.vswitchd
    }

    /// Underlay (tunnel endpoint) IP, on `br-phy`: 198.18.X.index.
    pub fn underlay_ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// Prefix length of the underlay subnet (24).
    pub fn underlay_prefix_len(&self) -> u8 {
        UNDERLAY_PREFIX_LEN
    }

    /// `unix:<path>` of the host's OVSDB (reachable from any namespace).
    pub fn ovsdb_remote(&self) -> String {
        self.ovsdb.unix_remote()
    }

    /// [`OvsdbServer::vsctl`] on the host's database (`--no-wait`).
    #[track_caller]
    pub fn vsctl(&self, args: &[&str]) -> String {
        self.ovsdb.vsctl(args)
    }

    /// [`OvsdbServer::try_vsctl`] on the host's database.
    pub fn try_vsctl(&self, args: &[&str]) -> Result<String, String> {
        self.ovsdb.try_vsctl(args)
    }

    /// [`OvsdbServer::vsctl_wait`]: waits for ovs-vswitchd to apply the change.
    #[track_caller]
    pub fn vsctl_wait(&self, args: &[&str]) -> String {
        self.ovsdb.vsctl_wait(args)
    }
}
