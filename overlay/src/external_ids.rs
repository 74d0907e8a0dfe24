//! The `external_ids` keys the agent writes on the OVSDB rows it creates. They are how a
//! restarted agent recognises its rows (and only its rows) and recovers local VLANs.

use std::collections::BTreeMap;

/// The host that owns the row; the agent deletes only rows carrying its own name here.
pub const OWNER: &str = "overlay-owner";
/// What the row is: one of the `KIND_*` values.
pub const KIND: &str = "overlay-kind";
/// The tenant a tunnel or container port belongs to.
pub const TENANT: &str = "overlay-tenant";
/// The tenant's VNI, for humans reading `ovs-vsctl list port`.
pub const VNI: &str = "overlay-vni";
/// The peer host of a tunnel port.
pub const PEER: &str = "overlay-peer";
/// The tenant's local VLAN, read back after a restart.
pub const LOCAL_VLAN: &str = "overlay-local-vlan";
/// The container a container port belongs to.
pub const CONTAINER: &str = "overlay-container";
/// The container's interface a container port belongs to.
pub const IFNAME: &str = "overlay-ifname";

/// Every key the agent writes: an update removes these (whatever their values) and inserts
/// the wanted ones, leaving every other key of the row alone.
pub const ALL: [&str; 8] = [OWNER, KIND, TENANT, VNI, PEER, LOCAL_VLAN, CONTAINER, IFNAME];

/// A tunnel port on br-tun.
pub const KIND_TUNNEL: &str = "tunnel";
/// A patch port between br-int and br-tun.
pub const KIND_PATCH: &str = "patch";
/// A container's veth port on br-int (managed by the plug path, not by the diff).
pub const KIND_CONTAINER: &str = "container";
/// A bridge the agent created.
pub const KIND_BRIDGE: &str = "bridge";
/// The br-int end of a tenant's router namespace (managed by the gateway, not by the diff).
pub const KIND_GATEWAY: &str = "gateway";

/// Whether a key is one the agent manages; others on our rows belong to other tools and are
/// preserved on update.
pub fn is_overlay_key(key: &str) -> bool {
    key.starts_with("overlay-")
}

/// The ids the plug path writes on a container port, so [`crate::diff::existing_vlans_from`]
/// recovers the tenant's VLAN from it after a restart, and recovery its container interface.
pub fn container_port(
    owner: &str,
    tenant: &str,
    vni: u32,
    local_vlan: u16,
    container: &str,
    ifname: &str,
) -> BTreeMap<String, String> {
    [
        (OWNER, owner.to_owned()),
        (KIND, KIND_CONTAINER.to_owned()),
        (TENANT, tenant.to_owned()),
        (VNI, vni.to_string()),
        (LOCAL_VLAN, local_vlan.to_string()),
        (CONTAINER, container.to_owned()),
        (IFNAME, ifname.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}
