//! An OVSDB client (RFC 7047): JSON-RPC over `unix:`, `tcp:` and `ssl:` streams, typed values,
//! transactions as builders whose every result is checked, `monitor` / `monitor_cond` /
//! `monitor_cond_since`, locks, schema validation before sending, and a replica kept current
//! by a reconnecting [`Client`].
//!
//! Layers, from the wire up:
//! - [`framing`]: splits the byte stream into JSON messages in linear time.
//! - [`Connection`]: one JSON-RPC session; requests, notifications, echo.
//! - [`Transaction`], [`Operation`], [`Condition`], [`Mutation`]: what to send.
//! - [`Replica`]: monitored tables in memory, indexed by column.
//! - [`Client`]: a connection that comes back after failures, with its replica.
#![warn(missing_docs)]

mod client;
mod codec;
mod connection;
mod error;
pub mod framing;
mod monitor;
mod operation;
mod remote;
mod replica;
mod schema;
mod transaction;
mod value;

pub use client::{Client, ClientEvent, ClientOptions, WaitTimeout};
pub use connection::{Connection, ConnectionOptions, LockEvent};
pub use error::{OvsdbError, OvsdbErrorKind, RpcError, SchemaError, TransactError, ValidationError, ValueError};
pub use monitor::{Monitor, MonitorEvent, MonitorRequests, MonitorVersion, RowUpdate, TableMonitor, TableUpdates};
pub use operation::{Condition, Function, Mutation, Mutator, Operation, Until};
pub use ovs_transport::{TlsError, TlsSettings, Transport};
pub use remote::{Remote, DEFAULT_PORT};
pub use replica::{apply_diff, Replica, TableReplica};
pub use schema::{AtomicType, BaseType, ColumnSchema, ColumnType, DatabaseSchema, RefType, TableSchema, WriteMode};
pub use transaction::{OpResult, TransactOutcome, Transaction};
pub use value::{Atom, FromValue, NamedUuid, Row, Uuid, Value};
