//! The gateway port of a tenant: the br-int end of its router namespace's veth, tagged with
//! the tenant's VLAN, and how the agent finds its own ones again.

use std::collections::BTreeMap;

use overlay::external_ids as ids;
use ovsdb_client::{Condition, Mutation, Replica, Row, TransactError, Uuid, Value};

use super::Ovsdb;

/// A gateway port of this host found in the replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundGatewayPort {
    /// The Port row.
    pub uuid: Uuid,
    /// Port name.
    pub name: String,
    /// Its tag.
    pub tag: Option<u16>,
}

/// Every gateway port `owner` made.
pub fn all(replica: &Replica, owner: &str) -> Vec<FoundGatewayPort> {
    replica
        .table("Port")
        .rows()
        .filter(|(_, row)| {
            row.map_str("external_ids", ids::OWNER) == Some(owner)
                && row.map_str("external_ids", ids::KIND) == Some(ids::KIND_GATEWAY)
        })
        .map(|(uuid, row)| FoundGatewayPort {
            uuid: uuid.clone(),
            name: row.get_as("name").unwrap_or_default(),
            tag: row.get_as::<Option<i64>>("tag").ok().flatten().and_then(|t| u16::try_from(t).ok()),
        })
        .collect()
}

/// Adds gateway port `name` of `tenant` to `bridge` with `tag` (one transaction).
pub async fn insert(
    ovs: &Ovsdb,
    bridge: &str,
    name: &str,
    owner: &str,
    tenant: &str,
    vni: u32,
    tag: u16,
) -> Result<(), TransactError> {
    let port_ids: BTreeMap<String, String> = [
        (ids::OWNER, owner.to_owned()),
        (ids::KIND, ids::KIND_GATEWAY.to_owned()),
        (ids::TENANT, tenant.to_owned()),
        (ids::VNI, vni.to_string()),
        (ids::LOCAL_VLAN, tag.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut tx = ovs.transaction();
    let iface = tx.insert("Interface", Row::new().with("name", name));
    let port = tx.insert(
        "Port",
        Row::new()
            .with("name", name)
            .with("interfaces", Value::set([iface]))
            .with("tag", Value::set([i64::from(tag)]))
            .with("external_ids", Value::map(port_ids)),
    );
    tx.mutate("Bridge", vec![Condition::eq("name", bridge)], vec![Mutation::insert("ports", Value::set([port]))]);
    ovs.transact(&tx).await.map(|_| ())
}
