//! Waiting on ovs-vswitchd: until it has taken a new port, until it has applied a removal or any
//! change, and asking it to reconfigure when it missed a link.

use std::future::Future;
use std::time::{Duration, Instant};

use ovsdb_client::{Atom, Condition, Function, Mutation, Mutator, TransactError, Transaction, Until, Uuid};

use super::Ovsdb;

/// How long a plug waits for ovs-vswitchd to take its port. A loaded host's ovs-vswitchd falls
/// seconds behind (100 concurrent plugs on a 2-CPU test machine took over 10 s); ovs-vsctl
/// itself waits without a limit.
pub const PORT_TAKEN_WITHIN: Duration = Duration::from_secs(30);

/// Why ovs-vswitchd did not take a port.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// It reported an error it will not retry by itself.
    #[error("ovs-vswitchd could not add {port}: {error}")]
    Refused {
        /// The port.
        port: String,
        /// What it reported.
        error: String,
    },
    /// It did not take it in time.
    #[error("ovs-vswitchd did not take port {port} within {} s{}", PORT_TAKEN_WITHIN.as_secs(),
            match last_error { Some(e) => format!("; the last error it reported: {e}"), None => ": is it running?".into() })]
    Timeout {
        /// The port.
        port: String,
        /// The last "No such device" it reported, if any.
        last_error: Option<String>,
    },
}

/// Where ovs-vswitchd is with a new port.
enum PortState {
    /// It has an ofport: traffic can flow.
    Taken,
    /// It reported an error it will not retry by itself.
    Refused(String),
    /// Not yet; with the "No such device" it reported, if any.
    Pending(Option<String>),
}

/// Waits until ovs-vswitchd has given `port` an ofport (traffic can flow), or says why not.
///
/// "No such device" is expected when ovs-vswitchd read the row before the kernel had the link:
/// it opens the port again at the link's event. Rarely (once in some 1,700 plugs of the plug
/// benchmark, under load) no later pass took it, and the port waited forever. So while that
/// error stays and `link_exists` says the link is there, ovs-vswitchd is asked to reconfigure
/// ([`nudge`]): after 1 s, then every 5 s.
pub async fn port_taken<F: Future<Output = bool>>(
    ovs: &Ovsdb,
    port: &str,
    link_exists: impl Fn() -> F,
) -> Result<(), PortError> {
    let deadline = Instant::now() + PORT_TAKEN_WITHIN;
    let mut slice = Duration::from_secs(1);
    let last_error = loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match port_state_within(ovs, port, slice.min(remaining)).await {
            PortState::Taken => return Ok(()),
            PortState::Refused(error) => return Err(PortError::Refused { port: port.to_owned(), error }),
            PortState::Pending(last) if Instant::now() >= deadline => break last,
            PortState::Pending(Some(err)) if err.contains("No such device") => {
                if link_exists().await {
                    tracing::warn!(%port, "ovs-vswitchd missed the link it found missing; asking it to reconfigure");
                    nudge(ovs).await;
                }
            }
            PortState::Pending(_) => {}
        }
        slice = Duration::from_secs(5);
    };
    Err(PortError::Timeout { port: port.to_owned(), last_error })
}

/// What ovs-vswitchd made of `port` once it has an ofport or an error other than "No such
/// device" (which it retries), or after `within`.
async fn port_state_within(ovs: &Ovsdb, port: &str, within: Duration) -> PortState {
    let mut state = PortState::Pending(None);
    let _ = ovs
        .wait_until(within, |r| {
            let Some((_, row)) = r.table("Interface").find_one("name", &Atom::from(port)) else {
                return false;
            };
            if row.get_as::<Option<i64>>("ofport").ok().flatten().is_some_and(|p| p > 0) {
                state = PortState::Taken;
                return true;
            }
            match row.get_as::<Option<String>>("error").ok().flatten() {
                Some(err) if err.contains("No such device") => {
                    state = PortState::Pending(Some(err));
                    false
                }
                Some(err) => {
                    state = PortState::Refused(err);
                    true
                }
                None => false,
            }
        })
        .await;
    state
}

/// Makes ovs-vswitchd reconfigure, which opens again every port it could not open before.
pub async fn nudge(ovs: &Ovsdb) {
    let Some(root) = super::root(&ovs.replica()).map(|(u, _)| u) else { return };
    let mut tx = ovs.transaction();
    bump_next_cfg(&mut tx, &root);
    if let Err(e) = ovs.transact(&tx).await {
        tracing::warn!(error = %e, "could not ask ovs-vswitchd to reconfigure");
    }
}

/// Removes the Port row `uuid` (named `port`) from its bridge and waits (5 s at most) until
/// ovs-vswitchd has applied the removal and the replica shows it.
///
/// The veth goes next, and the same container may be plugged again at once under the same port
/// name. If ovs-vswitchd took the removal and the new port in one pass, it would keep the old
/// port's netdev, bound to the deleted link, and the new port would carry no traffic.
pub async fn remove_port(ovs: &Ovsdb, uuid: &Uuid, port: &str) -> Result<(), TransactError> {
    let root = super::root(&ovs.replica()).map(|(u, _)| u);
    let mut tx = ovs.transaction();
    tx.mutate(
        "Bridge",
        vec![Condition::includes("ports", ovsdb_client::Value::set([uuid.clone()]))],
        vec![Mutation::delete("ports", ovsdb_client::Value::set([uuid.clone()]))],
    );
    // ovs-vsctl's way to learn when ovs-vswitchd has applied a change: it copies next_cfg to
    // cur_cfg at the end of the reconfiguration that saw it.
    let next_cfg = root.as_ref().map(|root| {
        bump_next_cfg(&mut tx, root);
        tx.select("Open_vSwitch", vec![Condition::uuid(root)], Some(vec!["next_cfg".to_owned()]))
    });
    let outcome = ovs.transact(&tx).await?;
    let wanted = next_cfg.and_then(|i| outcome.rows(i).first()?.get_as::<i64>("next_cfg").ok());
    if let (Some(root), Some(wanted)) = (root, wanted) {
        applied(ovs, &root, wanted, &format!("the removal of port {port}")).await;
    }
    let _ = ovs.wait_until(Duration::from_secs(5), |r| r.get("Port", uuid).is_none()).await;
    Ok(())
}

/// Waits (5 s at most) until ovs-vswitchd has applied every change committed so far: it is asked
/// to reconfigure, and reconfigurations see the database in commit order. `what` names the
/// change for the log line of a timeout.
pub async fn reconfigured(ovs: &Ovsdb, what: &str) {
    let Some(root) = super::root(&ovs.replica()).map(|(u, _)| u) else { return };
    let mut tx = ovs.transaction();
    bump_next_cfg(&mut tx, &root);
    let select = tx.select("Open_vSwitch", vec![Condition::uuid(&root)], Some(vec!["next_cfg".to_owned()]));
    match ovs.transact(&tx).await {
        Ok(outcome) => {
            if let Some(wanted) = outcome.rows(select).first().and_then(|r| r.get_as::<i64>("next_cfg").ok()) {
                applied(ovs, &root, wanted, what).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not ask ovs-vswitchd to apply {what}"),
    }
}

/// Waits (5 s at most) until ovs-vswitchd's `cur_cfg` reaches `next_cfg`: a `wait` operation,
/// which ovsdb-server holds until it holds, so nothing polls. A timeout is only logged: the
/// change is committed either way, and without ovs-vswitchd there is nothing to wait for.
async fn applied(ovs: &Ovsdb, root: &Uuid, next_cfg: i64, what: &str) {
    let mut tx = ovs.transaction();
    tx.wait(
        "Open_vSwitch",
        vec![Condition::uuid(root), Condition::new("cur_cfg", Function::Ge, next_cfg)],
        vec!["cur_cfg".to_owned()],
        Until::NotEqual,
        Vec::new(),
        Some(5000),
    );
    if let Err(e) = ovs.transact(&tx).await {
        tracing::warn!(error = %e, "ovs-vswitchd did not confirm {what} within 5 s: is it running?");
    }
}

/// Adds to `tx` the change that makes ovs-vswitchd reconfigure: `next_cfg` + 1 on the root row
/// (ovs-vswitchd copies it to `cur_cfg` once the reconfiguration that saw it is done).
fn bump_next_cfg(tx: &mut Transaction, root: &Uuid) {
    tx.mutate("Open_vSwitch", vec![Condition::uuid(root)], vec![Mutation::new("next_cfg", Mutator::Add, 1i64)]);
}
