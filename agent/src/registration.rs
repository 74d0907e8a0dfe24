//! Holding the hostname: registering (or waiting, refused, while another machine holds it),
//! keeping the host lease and the liveness key, and replacing a dead machine on purpose.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use overlay::model::{HostRecord, Liveness};

use crate::agent::Agent;
use crate::backoff::Backoff;
use crate::host::HostState;
use crate::registry::{Registration, RegistrationRequest, Registry, RegistryError};

/// What registering needs beyond the registry and this host.
#[derive(Debug, Clone)]
pub struct RegisterOptions {
    /// This boot's id.
    pub boot_id: String,
    /// The dead machine the operator allows this one to replace (`--take-over`).
    pub take_over: Option<String>,
    /// The host lease's TTL.
    pub host_ttl: Duration,
    /// The liveness key's TTL: how long a predecessor's key may outlive it.
    pub liveness_ttl: Duration,
}

/// Registers this host, retrying until it may: while another machine holds the hostname the
/// agent writes nothing, and says why in the log, in `status` and in the metrics (through
/// [`HostState::set_conflict`]); while it waits for a holder's liveness key to expire, the log
/// and `status` say so ([`HostState::set_waiting`]).
pub async fn register(registry: &Registry, host: &HostState, opts: &RegisterOptions) -> Registration {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut waiting_since: Option<tokio::time::Instant> = None;
    let mut reported: Option<String> = None;
    loop {
        let req = RegistrationRequest {
            me: &host.me,
            boot_id: &opts.boot_id,
            take_over: opts.take_over.as_deref(),
            ttl: opts.host_ttl,
        };
        let refusal = match registry.register_host(&req, crate::identity::agent_running).await {
            Ok(r) => {
                host.registered(r.clone());
                if let Some(previous) = &r.replaced {
                    remove_replaced_endpoints(registry, &host.me, previous).await;
                }
                return r;
            }
            Err(RegistryError::WaitForLiveness(c)) => {
                // A holder that may be on its way out: our identity on another boot (the previous
                // boot's key outliving a quick reboot, or a clone that copied the state
                // directory), or an older agent of this machine killed for an upgrade. Only the
                // TTL tells.
                let wait = opts.liveness_ttl * 2 + Duration::from_secs(1);
                let since = *waiting_since.get_or_insert_with(|| {
                    host.set_waiting(format!(
                        "waiting up to {} s for the liveness key of machine {} (underlay {}) to expire: it may be \
                         this machine's previous boot or an agent being replaced; if the key stays, registering is \
                         refused",
                        wait.as_secs(),
                        c.holder,
                        c.holder_ip
                    ));
                    tokio::time::Instant::now()
                });
                if since.elapsed() < wait {
                    if reported.is_none() {
                        tracing::info!(holder = %c.holder, holder_ip = %c.holder_ip, "the holder of this hostname may be going away; waiting for its liveness key to expire");
                        reported = Some(String::new());
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                c.to_string()
            }
            Err(RegistryError::HostConflict(c)) => c.to_string(),
            Err(e @ RegistryError::Conflict(_)) => e.to_string(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot register in etcd yet; retrying");
                backoff.wait().await;
                continue;
            }
        };
        if reported.as_deref() != Some(refusal.as_str()) {
            tracing::error!(reason = %refusal, "refusing to register: this agent writes nothing until the conflict is resolved");
            reported = Some(refusal.clone());
        }
        host.set_conflict(Some(refusal));
        tokio::time::sleep(Duration::from_secs(5)).await;
        waiting_since = None;
    }
}

/// After a take-over: the replaced machine's containers are gone with it. Their endpoint
/// records and addresses are removed, each logged; its subnet leases stay, and this machine
/// takes them over as it joins those tenants.
async fn remove_replaced_endpoints(registry: &Registry, me: &HostRecord, previous: &HostRecord) {
    tracing::warn!(
        host = %me.hostname, previous_machine = %previous.machine_id, previous_underlay = %previous.underlay_ip,
        "took over the hostname of a machine that is gone; removing its endpoints"
    );
    let endpoints = match registry.endpoints_of_host(&me.hostname).await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot list the replaced machine's endpoints; remove them by hand");
            return;
        }
    };
    for (key, ep) in endpoints.into_iter().filter(|(_, e)| e.machine_id == previous.machine_id) {
        match registry.delete_endpoint(&key, &ep).await {
            Ok(()) => tracing::warn!(
                container = %ep.container_id, ifname = %ep.ifname, tenant = %ep.tenant, ip = %ep.ip,
                "endpoint of the replaced machine removed"
            ),
            Err(e) => tracing::error!(key, error = %e, "cannot remove an endpoint of the replaced machine"),
        }
    }
}

/// Keeps the host lease alive; when it is lost, registers again through the same rules (a
/// machine that took the name over meanwhile wins, and this agent stops writing).
pub async fn keep_host_lease(agent: Arc<Agent>, opts: RegisterOptions) {
    let (registry, host) = (&agent.registry, &agent.host);
    loop {
        let Some(reg) = host.registration() else { return };
        let reason = registry.keep_alive(reg.host_lease, opts.host_ttl).await;
        tracing::warn!(%reason, "host lease keep-alive interrupted");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let renewed = register(registry, host, &opts).await;
        if renewed.host_lease != reg.host_lease {
            tracing::warn!(lease = renewed.host_lease, "host lease was lost; registered again");
            let tenants: Vec<String> = host.own_leases().into_keys().collect();
            for t in tenants {
                let restored = match registry.get_tenant(&t).await {
                    Ok(tenant) => host.join_tenant(registry, &tenant).await.map(drop),
                    Err(e) => Err(e),
                };
                if let Err(e) = restored {
                    tracing::warn!(tenant = %t, error = %e, "could not restore the subnet lease");
                }
            }
        }
    }
}

/// Keeps the liveness key (what it says: [`Liveness`]) while the agent runs; `current` holds
/// its lease, for the shutdown to revoke.
pub async fn keep_alive_key(agent: Arc<Agent>, liveness: Liveness, ttl: Duration, current: Arc<Mutex<Option<i64>>>) {
    loop {
        match agent.registry.set_alive(&agent.host.me.hostname, &liveness, ttl).await {
            Ok(lease) => {
                *current.lock().expect("liveness lock") = Some(lease);
                let reason = agent.registry.keep_alive(lease, ttl).await;
                tracing::debug!(%reason, "liveness keep-alive interrupted");
            }
            Err(e) => tracing::debug!(error = %e, "cannot write the liveness key"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
