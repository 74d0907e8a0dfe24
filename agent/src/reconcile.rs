//! The level-triggered loop: events only mark the state dirty; this loop does the work, one
//! pass at a time, with a full pass on a deadline that events cannot push back. And the
//! watch for containers that die without an unplug.

use std::sync::Arc;
use std::time::Duration;

use openflow_client::SwitchState;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::agent::Agent;
use crate::backoff::Backoff;
use crate::memory::MemoryReleaser;
use crate::registry::ClusterCache;

/// Runs passes until the process ends: first start-up recovery, then a pass after every burst
/// of events, and a full pass (every port compared, every container's veth checked) at least
/// every resync interval.
pub async fn reconcile_loop(agent: Arc<Agent>) {
    let mut wakers = Wakers::of(&agent);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let resync = agent.config.timers.resync_interval;
    let mut memory = MemoryReleaser::new();
    // Never reconcile against an empty view: before the first etcd list arrives, every tunnel
    // would look unwanted and a restart would tear the mesh down and build it again.
    if wakers.cluster.wait_for(|c| c.revision > 0).await.is_err() {
        return;
    }
    // A crash mid-plug or mid-unplug left half a container, or a container went away while
    // the agent was down: finish the job before anything else.
    let mut retry = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match agent.plugger().recover().await {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(removed = n, "start-up recovery done");
                }
                agent.plugs.set_recovered();
                break;
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "start-up recovery failed; retrying");
                retry.wait().await;
            }
        }
    }
    let mut next_full = Instant::now() + resync;
    let mut full = false;
    loop {
        match agent.pass(full).await {
            Ok(_) => {
                backoff.reset();
                memory.after_pass();
                if full {
                    sweep(&agent).await;
                }
                full = false;
            }
            Err(e) => {
                let retry_in = backoff.next_delay();
                tracing::warn!(error = %format!("{e:#}"), ?retry_in, "reconcile failed");
                // Retried after the backoff, or at once when something changes (a bridge's
                // OpenFlow connection coming up is the usual cure).
                let retry_at = Instant::now() + retry_in;
                if !wakers.woken(&agent, retry_at).await {
                    return;
                }
                continue;
            }
        }
        if !wakers.woken(&agent, next_full).await {
            return;
        }
        // A deadline of its own: a stream of events, each waking the loop before the interval
        // is over, must not postpone the safety-net pass forever.
        if Instant::now() >= next_full {
            full = true;
            next_full = Instant::now() + resync;
        }
        // Coalesce a burst of events (a peer registering writes several keys) into one pass.
        tokio::time::sleep(Duration::from_millis(20)).await;
        wakers.seen();
    }
}

/// What wakes the loop besides the agent's own nudge (`host.dirty`): the cluster, OVSDB, and
/// either bridge's OpenFlow session coming (back) up, whose flows are then read back and put
/// in.
struct Wakers {
    cluster: watch::Receiver<ClusterCache>,
    ovs: watch::Receiver<u64>,
    int_switch: watch::Receiver<SwitchState>,
    tun_switch: watch::Receiver<SwitchState>,
}

impl Wakers {
    fn of(agent: &Agent) -> Self {
        let (int_switch, tun_switch) = agent.dataplane.flows.states();
        Wakers { cluster: agent.cluster.clone(), ovs: agent.ovs.changes(), int_switch, tun_switch }
    }

    /// Waits until something changes, the agent is nudged, or `until`; false once a source
    /// has ended (the agent is stopping).
    async fn woken(&mut self, agent: &Agent, until: Instant) -> bool {
        tokio::select! {
            _ = agent.host.dirty.notified() => true,
            r = self.cluster.changed() => r.is_ok(),
            r = self.ovs.changed() => r.is_ok(),
            r = self.int_switch.changed() => r.is_ok(),
            r = self.tun_switch.changed() => r.is_ok(),
            _ = tokio::time::sleep_until(until) => true,
        }
    }

    /// Marks every change so far as seen: the pass that follows covers them.
    fn seen(&mut self) {
        self.cluster.borrow_and_update();
        self.ovs.borrow_and_update();
        self.int_switch.borrow_and_update();
        self.tun_switch.borrow_and_update();
    }
}

/// The safety net for link events the agent missed: unplug every container of this machine
/// whose veth is gone.
async fn sweep(agent: &Agent) {
    match agent.plugger().sweep().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(reaped = n, "full pass: containers whose veth was gone unplugged"),
        Err(e) => tracing::warn!(error = %e, "checking for dead containers failed"),
    }
}

/// Unplugs a container interface as soon as its veth is deleted (its namespace went away, or
/// someone deleted the link): the kernel announces the deletion in the host namespace.
pub async fn watch_dead_containers(agent: Arc<Agent>) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match agent.host_netns.link_deletions().await {
            Ok(mut deletions) => {
                backoff.reset();
                while let Some(name) = deletions.next().await {
                    if !overlay::naming::is_container_port_name(&name) {
                        continue;
                    }
                    // Each on its own task: an unplug waits for ovs-vswitchd, and the next
                    // deletion should not wait for it.
                    let agent = agent.clone();
                    tokio::spawn(async move {
                        if let Err(e) = agent.plugger().reap(&name).await {
                            tracing::warn!(port = %name, error = %e, "unplugging a dead container failed; the next full pass retries");
                        }
                    });
                }
                tracing::warn!("link event subscription ended; subscribing again");
            }
            Err(e) => tracing::warn!(error = %e, "cannot subscribe to link events; retrying"),
        }
        backoff.wait().await;
    }
}
