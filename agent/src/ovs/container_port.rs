//! The container port of a plug: one Port + Interface row on the integration bridge, shaped
//! the nova-docker way, and how the agent finds its own ones again.

use std::collections::BTreeMap;

use overlay::external_ids as ids;
use ovsdb_client::{Atom, Condition, Mutation, Replica, Row, TransactError, Uuid, Value};

use super::Ovsdb;

/// A container port as the plug path writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPort {
    /// Port and interface name: the host end of the veth.
    pub name: String,
    /// The tenant's local VLAN (`Port.tag`).
    pub tag: u16,
    /// This host (`external_ids:overlay-owner`).
    pub owner: String,
    /// The tenant and its VNI.
    pub tenant: String,
    /// The tenant's VNI.
    pub vni: u32,
    /// The container.
    pub container_id: String,
    /// The interface inside the container.
    pub ifname: String,
    /// `iface-id`.
    pub iface_id: String,
    /// The container end's MAC (`attached-mac`).
    pub mac: String,
    /// The OpenFlow port number asked of ovs-vswitchd (`Interface.ofport_request`).
    pub ofport_request: Option<u32>,
}

impl ContainerPort {
    /// Adds the Port and Interface rows to `bridge` in one transaction. The Interface carries the
    /// keys Neutron and nova-docker use (`iface-id`, `iface-status`, `attached-mac`,
    /// `vm-uuid`), so existing OVS tooling recognises the port.
    pub async fn insert(&self, ovs: &Ovsdb, bridge: &str) -> Result<(), TransactError> {
        let iface_ids = BTreeMap::from([
            ("iface-id".to_owned(), self.iface_id.clone()),
            ("iface-status".to_owned(), "active".to_owned()),
            ("attached-mac".to_owned(), self.mac.clone()),
            ("vm-uuid".to_owned(), self.container_id.clone()),
        ]);
        let port_ids =
            ids::container_port(&self.owner, &self.tenant, self.vni, self.tag, &self.container_id, &self.ifname);
        let mut tx = ovs.transaction();
        let iface = tx.insert(
            "Interface",
            Row::new()
                .with("name", self.name.as_str())
                .with("external_ids", Value::map(iface_ids))
                .with("ofport_request", Value::from(self.ofport_request.map(i64::from))),
        );
        let port = tx.insert(
            "Port",
            Row::new()
                .with("name", self.name.as_str())
                .with("interfaces", Value::set([iface]))
                .with("tag", Value::set([i64::from(self.tag)]))
                .with("external_ids", Value::map(port_ids)),
        );
        tx.mutate(
            "Bridge",
            vec![Condition::eq("name", bridge)],
            vec![Mutation::insert("ports", Value::set([port.clone()]))],
        );
        let outcome = ovs.transact(&tx).await?;
        // Until the replica shows the row, a rollback or an unplug looking it up would miss it
        // and leave it behind.
        if let Some(uuid) = outcome.uuid(&port).cloned() {
            let _ = ovs.wait_until(std::time::Duration::from_secs(5), |r| r.get("Port", &uuid).is_some()).await;
        }
        Ok(())
    }
}

/// Sets `external_ids:vm-uuid` of the container port `name`'s Interface (what nova-docker puts
/// there: the instance, here the container). A runtime that learns the container's id only
/// after the plug (Docker tells a network driver endpoint ids, not container ids) labels it
/// afterwards. Nothing is sent when it has that value already.
pub async fn set_vm_uuid(ovs: &Ovsdb, name: &str, vm_uuid: &str) -> Result<bool, TransactError> {
    let current = ovs
        .replica()
        .table("Interface")
        .find("name", &Atom::from(name))
        .into_iter()
        .find_map(|(_, row)| row.map_str("external_ids", "vm-uuid").map(str::to_owned));
    if current.as_deref() == Some(vm_uuid) {
        return Ok(false);
    }
    let mut tx = ovs.transaction();
    tx.mutate(
        "Interface",
        vec![Condition::eq("name", name)],
        // In order: the old key goes, then the new pair goes in (insert keeps an existing key).
        vec![
            Mutation::delete("external_ids", Value::set(["vm-uuid"])),
            Mutation::insert("external_ids", Value::map(BTreeMap::from([("vm-uuid".to_owned(), vm_uuid.to_owned())]))),
        ],
    );
    ovs.transact(&tx).await?;
    Ok(true)
}

/// A container port of this host found in the replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundPort {
    /// The Port row.
    pub uuid: Uuid,
    /// Port name.
    pub name: String,
    /// The container and interface it was made for: from the agent's own keys, or for ports of
    /// earlier agents from `vm-uuid` (their only interface, `eth0`).
    pub container: Option<(String, String)>,
    /// Its ofport, once ovs-vswitchd has it.
    pub ofport: Option<i64>,
    /// What ovs-vswitchd reported, if it could not open the port.
    pub error: Option<String>,
}

/// Whether a Port row is a container port made by `owner`.
fn is_ours(row: &Row, owner: &str) -> bool {
    row.map_str("external_ids", ids::OWNER) == Some(owner)
        && row.map_str("external_ids", ids::KIND) == Some(ids::KIND_CONTAINER)
}

fn found(replica: &Replica, uuid: &Uuid, row: &Row) -> FoundPort {
    let iface = row
        .get_as::<Vec<Uuid>>("interfaces")
        .ok()
        .and_then(|i| i.first().cloned())
        .and_then(|u| replica.get("Interface", &u));
    let from_keys = row
        .map_str("external_ids", ids::CONTAINER)
        .map(|c| (c.to_owned(), row.map_str("external_ids", ids::IFNAME).unwrap_or("eth0").to_owned()));
    let from_vm_uuid =
        || iface.and_then(|i| i.map_str("external_ids", "vm-uuid")).map(|c| (c.to_owned(), "eth0".to_owned()));
    FoundPort {
        uuid: uuid.clone(),
        name: row.get_as("name").unwrap_or_default(),
        container: from_keys.or_else(from_vm_uuid),
        ofport: iface.and_then(|i| i.get_as::<Option<i64>>("ofport").ok().flatten()).filter(|p| *p > 0),
        error: iface.and_then(|i| i.get_as::<Option<String>>("error").ok().flatten()),
    }
}

/// The container port `name`, if `owner` made it.
pub fn find(replica: &Replica, name: &str, owner: &str) -> Option<FoundPort> {
    replica
        .table("Port")
        .find("name", &Atom::from(name))
        .into_iter()
        .find(|(_, row)| is_ours(row, owner))
        .map(|(u, row)| found(replica, u, row))
}

/// Every container port `owner` made.
pub fn all(replica: &Replica, owner: &str) -> Vec<FoundPort> {
    replica.table("Port").rows().filter(|(_, row)| is_ours(row, owner)).map(|(u, row)| found(replica, u, row)).collect()
}

/// The names of every Interface row, on any bridge.
pub fn interface_names(replica: &Replica) -> std::collections::BTreeSet<String> {
    replica.table("Interface").rows().filter_map(|(_, row)| row.get_as::<String>("name").ok()).collect()
}
