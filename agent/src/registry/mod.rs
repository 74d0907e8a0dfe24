//! The cluster registry in etcd (layout in docs/design.md): host registration under a long
//! lease that a restarted agent re-attaches to, a short liveness key, tenants with unique VNIs,
//! flannel-style subnet leases, address reservations, endpoint records, and a watched cache of
//! what the data plane needs.
//!
//! Every uniqueness rule is an etcd transaction (compare create_revision == 0 and create),
//! never a read followed by a write.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, TxnOpResponse};

mod addresses;
mod cache;
mod endpoints;
mod hosts;
mod keys;
mod reservations;
mod subnets;
mod tenants;
mod watch;

pub use cache::{ClusterCache, Endpoints, Leases};
pub use hosts::{Registration, RegistrationRequest};
pub use keys::{Key, Keys};
pub use reservations::RESERVATION_TTL;

/// What went wrong talking to the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// etcd could not be reached or refused the request.
    #[error("etcd request failed ({context}): {source}; is etcd reachable at the configured endpoints?")]
    Etcd {
        /// What the agent was doing.
        context: String,
        /// The client error.
        #[source]
        source: etcd_client::Error,
    },
    /// Someone else holds a name or address this host claims.
    #[error("{0}")]
    Conflict(String),
    /// The hostname is another machine's.
    #[error("{0}")]
    HostConflict(overlay::identity::Conflict),
    /// This machine's identity is alive on another boot: wait for its liveness key to go.
    #[error("{0}")]
    WaitForLiveness(overlay::identity::Conflict),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
}

fn etcd(context: impl Into<String>) -> impl FnOnce(etcd_client::Error) -> RegistryError {
    let context = context.into();
    move |source| RegistryError::Etcd { context, source }
}

/// Keys per page when listing the registry: records are well under 1 KiB, so a page stays far
/// below the 4 MiB gRPC message limit.
const LIST_PAGE: i64 = 500;

/// The agent's handle on etcd.
#[derive(Clone)]
pub struct Registry {
    client: Client,
    keys: Keys,
    /// The revision of this agent's newest write of an endpoint record: the watched cache
    /// shows this host's records as they are once it has reached it ([`Registry::written`]).
    last_write: Arc<AtomicI64>,
}

impl Registry {
    /// Connects (lazily: etcd may be down now and come up later).
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        auth: Option<(String, String)>,
        tls: Option<etcd_client::TlsOptions>,
    ) -> Result<Self, RegistryError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
        if let Some((u, p)) = auth {
            opts = opts.with_user(u, p);
        }
        if let Some(tls) = tls {
            opts = opts.with_tls(tls);
        }
        let client = Client::connect(endpoints, Some(opts)).await.map_err(etcd("connecting"))?;
        Ok(Registry { client, keys: Keys::new(prefix), last_write: Arc::new(AtomicI64::new(0)) })
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The revision of this agent's newest endpoint write (0 before any).
    pub fn written(&self) -> i64 {
        self.last_write.load(Ordering::Acquire)
    }

    fn note_write(&self, header: Option<&etcd_client::ResponseHeader>) {
        if let Some(h) = header {
            self.last_write.fetch_max(h.revision(), Ordering::AcqRel);
        }
    }

    /// Revokes a lease (the liveness lease at shutdown).
    pub async fn revoke(&self, lease: i64) {
        let _ = self.client.clone().lease_revoke(lease).await;
    }
}

/// The values the `get`s of a transaction's branch found (`None` for a missing key).
fn txn_gets(resp: &etcd_client::TxnResponse) -> Vec<Option<Vec<u8>>> {
    resp.op_responses()
        .into_iter()
        .map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        })
        .collect()
}

/// The value the first `get` of a transaction's branch found.
fn first_get(resp: &etcd_client::TxnResponse) -> Option<Vec<u8>> {
    txn_gets(resp).into_iter().next().flatten()
}
