//! A handle that keeps a session with one switch: it reconnects with exponential backoff and
//! jitter when the session drops (ovs-vswitchd restarted, the bridge re-created), and counts
//! sessions in an epoch. A switch that restarts comes back with no flows (or with whatever its
//! database says), so every new epoch means: read the flows again and reinstall.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client_error::ClientError;
use crate::connection::{Connection, ConnectionOptions};
use crate::flow_mod::{Flow, FlowMod};
use crate::multipart::{FlowCookie, FlowStats, FlowStatsRequest};
use crate::target::Target;

/// How to reach the switch and how to retry.
#[derive(Debug, Clone)]
pub struct SwitchOptions {
    /// Where it listens.
    pub target: Target,
    /// First reconnect delay; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Options of each session.
    pub connection: ConnectionOptions,
}

impl SwitchOptions {
    /// Backoff 100 ms to 5 s, default session options.
    pub fn new(target: Target) -> Self {
        SwitchOptions {
            target,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            connection: ConnectionOptions::default(),
        }
    }
}

/// The state a [`Switch`] publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchState {
    /// Sessions established so far: 0 before the first, then 1, 2, ...
    pub epoch: u64,
    /// Whether the session of `epoch` is up.
    pub connected: bool,
}

struct Shared {
    options: SwitchOptions,
    conn: RwLock<Option<Connection>>,
    state: watch::Sender<SwitchState>,
    /// Why the last attempt to connect failed, until one succeeds.
    last_error: RwLock<Option<String>>,
}

/// Keeps a session with one switch. Dropping it stops reconnecting and closes the session.
pub struct Switch {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(c) = self.shared.conn.write().expect("conn lock").take() {
            c.close();
        }
    }
}

impl Switch {
    /// Starts connecting in the background (a task on the current tokio runtime);
    /// [`Switch::state`] tells when a session is up.
    pub fn start(options: SwitchOptions) -> Switch {
        let (state, _) = watch::channel(SwitchState { epoch: 0, connected: false });
        let shared = Arc::new(Shared { options, conn: RwLock::new(None), state, last_error: RwLock::new(None) });
        let task = tokio::spawn(supervise(shared.clone()));
        Switch { shared, task }
    }

    /// The epoch and whether it is up; changes on every connect and disconnect. A caller that
    /// installs flows watches it: a new epoch means the switch must be read and reconciled.
    pub fn state(&self) -> watch::Receiver<SwitchState> {
        self.shared.state.subscribe()
    }

    /// The current epoch (0: never connected).
    pub fn epoch(&self) -> u64 {
        self.shared.state.borrow().epoch
    }

    /// Waits until a session is up (returns its epoch), at most `timeout`; the error names the
    /// target and why the last attempt failed.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<u64, ClientError> {
        let mut rx = self.state();
        let up = tokio::time::timeout(timeout, rx.wait_for(|s| s.connected)).await;
        match up {
            Ok(Ok(s)) => Ok(s.epoch),
            _ => Err(ClientError::NotConnectedWithin {
                target: self.shared.options.target.to_string(),
                after: timeout,
                last_error: self.shared.last_error.read().expect("last_error lock").clone(),
            }),
        }
    }

    /// The current session, or [`ClientError::NotConnected`] at once when there is none.
    pub fn connection(&self) -> Result<Connection, ClientError> {
        self.shared
            .conn
            .read()
            .expect("conn lock")
            .clone()
            .filter(|c| !c.is_closed())
            .ok_or_else(|| ClientError::NotConnected { target: self.shared.options.target.to_string() })
    }

    /// [`Connection::bundle`] on the current session.
    pub async fn bundle(&self, mods: &[FlowMod]) -> Result<(), ClientError> {
        self.connection()?.bundle(mods).await
    }

    /// [`Connection::bundle_iter`] on the current session.
    pub async fn bundle_iter<I>(&self, mods: I) -> Result<(), ClientError>
    where
        I: IntoIterator,
        I::Item: std::borrow::Borrow<FlowMod> + Send,
        I::IntoIter: Send,
    {
        self.connection()?.bundle_iter(mods).await
    }

    /// [`Connection::flow_mods`] on the current session.
    pub async fn flow_mods(&self, mods: &[FlowMod]) -> Result<(), ClientError> {
        self.connection()?.flow_mods(mods).await
    }

    /// [`Connection::dump_flows`] on the current session.
    pub async fn dump_flows(&self, request: &FlowStatsRequest) -> Result<Vec<FlowStats>, ClientError> {
        self.connection()?.dump_flows(request).await
    }

    /// [`Connection::dump_cookies`] on the current session.
    pub async fn dump_cookies(&self, request: &FlowStatsRequest) -> Result<Vec<FlowCookie>, ClientError> {
        self.connection()?.dump_cookies(request).await
    }

    /// [`Connection::flows`] on the current session.
    pub async fn flows(&self, request: &FlowStatsRequest) -> Result<Vec<Flow>, ClientError> {
        self.connection()?.flows(request).await
    }
}

fn jitter(d: Duration) -> Duration {
    // Spread the reconnects of many agents after a switch restart: 75%..125% of the delay.
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.subsec_nanos()).unwrap_or(0);
    d.mul_f64(0.75 + f64::from(nanos % 1000) / 2000.0)
}

async fn supervise(shared: Arc<Shared>) {
    let target = shared.options.target.clone();
    let mut delay = shared.options.backoff_min;
    loop {
        match Connection::connect(&target, shared.options.connection.clone()).await {
            Ok(conn) => {
                delay = shared.options.backoff_min;
                shared.last_error.write().expect("last_error lock").take();
                *shared.conn.write().expect("conn lock") = Some(conn.clone());
                shared.state.send_modify(|s| {
                    s.epoch += 1;
                    s.connected = true;
                });
                tracing::info!(target = %target, epoch = shared.state.borrow().epoch, "switch connected");
                let reason = conn.closed().await;
                shared.conn.write().expect("conn lock").take();
                shared.state.send_modify(|s| s.connected = false);
                tracing::warn!(target = %target, %reason, "switch session lost; reconnecting");
            }
            Err(e) => {
                tracing::debug!(target = %target, error = %e, ?delay, "switch connect failed");
                // The target is in the caller's error already; why it failed is what to add.
                let why = match e {
                    ClientError::Connect { source, .. } => source.to_string(),
                    other => other.to_string(),
                };
                *shared.last_error.write().expect("last_error lock") = Some(why);
                tokio::time::sleep(jitter(delay)).await;
                delay = (delay * 2).min(shared.options.backoff_max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_switch_never_reached_is_named_with_why() {
        let dir = tempfile::tempdir().unwrap();
        let switch = Switch::start(SwitchOptions::new(Target::mgmt(Some(dir.path()), "br-x")));
        let err = switch.wait_connected(Duration::from_millis(300)).await.unwrap_err();
        let msg = err.to_string();
        let socket = dir.path().join("br-x.mgmt");
        assert!(msg.contains(&format!("unix:{}", socket.display())), "{msg}");
        assert!(msg.contains("last attempt: No such file or directory"), "{msg}");
        assert!(err.is_connection_lost());
    }
}
