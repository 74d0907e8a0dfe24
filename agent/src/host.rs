//! This host's standing in the cluster, shared by the daemon's tasks and the plug path: its
//! record, its registration (the lease its keys hang on), the subnet leases it took, and why it
//! does not hold its hostname when it does not.

use std::collections::BTreeMap;
use std::sync::Mutex;

use overlay::model::{HostRecord, SubnetLease, Tenant};
use tokio::sync::Notify;

use crate::registry::{Registration, Registry, RegistryError};

/// This host's standing; every field is behind its own lock, none held across an await.
pub struct HostState {
    /// This host as it registers.
    pub me: HostRecord,
    registration: Mutex<Option<Registration>>,
    /// Leases this agent took, merged into the data plane's view until the watch shows them.
    own_leases: Mutex<BTreeMap<String, SubnetLease>>,
    /// Why this agent does not hold its hostname, while it does not.
    conflict: Mutex<Option<String>>,
    /// What registering waits for, while it waits.
    waiting: Mutex<Option<String>>,
    /// Wakes the reconcile loop.
    pub dirty: Notify,
}

impl HostState {
    /// Not registered yet.
    pub fn new(me: HostRecord) -> Self {
        HostState {
            me,
            registration: Mutex::new(None),
            own_leases: Mutex::new(BTreeMap::new()),
            conflict: Mutex::new(None),
            waiting: Mutex::new(None),
            dirty: Notify::new(),
        }
    }

    /// The registration, once there is one.
    pub fn registration(&self) -> Option<Registration> {
        self.registration.lock().expect("registration lock").clone()
    }

    /// Records the registration (and that there is no conflict or wait any more).
    pub fn registered(&self, r: Registration) {
        *self.registration.lock().expect("registration lock") = Some(r);
        *self.conflict.lock().expect("conflict lock") = None;
        *self.waiting.lock().expect("waiting lock") = None;
    }

    /// Records why the hostname cannot be held (and that registering waits no more); `None`
    /// clears it.
    pub fn set_conflict(&self, why: Option<String>) {
        *self.conflict.lock().expect("conflict lock") = why;
        *self.waiting.lock().expect("waiting lock") = None;
    }

    /// Records what registering waits for.
    pub fn set_waiting(&self, what: String) {
        *self.waiting.lock().expect("waiting lock") = Some(what);
    }

    /// What registering waits for, while it waits.
    pub fn waiting(&self) -> Option<String> {
        self.waiting.lock().expect("waiting lock").clone()
    }

    /// Why the hostname is not held, if it is not.
    pub fn conflict(&self) -> Option<String> {
        self.conflict.lock().expect("conflict lock").clone()
    }

    /// The leases this agent took.
    pub fn own_leases(&self) -> BTreeMap<String, SubnetLease> {
        self.own_leases.lock().expect("own_leases lock").clone()
    }

    /// Ensures this host holds a subnet lease in `tenant` (it then takes part in it).
    pub async fn join_tenant(&self, registry: &Registry, tenant: &Tenant) -> Result<SubnetLease, RegistryError> {
        let Some(host_lease) = self.registration().map(|r| r.host_lease) else {
            return Err(RegistryError::Conflict(
                self.conflict()
                    .or_else(|| {
                        self.waiting().map(|w| format!("the agent is not registered in etcd yet ({w}); try again"))
                    })
                    .unwrap_or_else(|| "the agent is not registered in etcd yet; try again".into()),
            ));
        };
        let known = self.own_leases.lock().expect("own_leases lock").get(tenant.name()).cloned();
        let lease = registry.ensure_lease(tenant, &self.me, host_lease, known.as_ref()).await?;
        self.own_leases.lock().expect("own_leases lock").insert(lease.tenant.clone(), lease.clone());
        self.dirty.notify_one();
        Ok(lease)
    }
}
