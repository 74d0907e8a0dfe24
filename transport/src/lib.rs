//! The byte streams to Open vSwitch that the OVSDB and OpenFlow clients share.
//!
//! - [`Endpoint`]: where a server listens, in OVS's active-connection syntax (`unix:PATH`,
//!   `tcp:HOST:PORT`, `ssl:HOST:PORT`), parsed with the defaults and wording of one protocol
//!   ([`OVSDB`] or [`OPENFLOW`]), printed back the same way, and connected to
//!   ([`Endpoint::connect_tls`]) as a boxed [`Transport`].
//! - [`TlsSettings`]: the client certificate of `ssl:` endpoints, verified by CA as OVS does.
//! - [`Closed`], [`Tasks`], [`write_until_closed`] and [`probe`]: whether a session is over and
//!   why, the tasks that end with it, the writer that owns the write half until then, and the
//!   inactivity probe.
#![warn(missing_docs)]

mod connect;
mod endpoint;
mod probe;
mod session;
mod tls;

pub use connect::{ConnectError, Transport};
pub use endpoint::{
    mgmt_socket, Endpoint, OpenFlowTarget, OvsdbRemote, ParseError, ParseErrorKind, DEFAULT_OVS_RUNDIR, OPENFLOW,
    OVSDB, OVSDB_DEFAULT_PORT,
};
pub use probe::{probe, LastHeard, Probed};
pub use session::{write_until_closed, CloseWatch, Closed, Session, Tasks};
pub use tls::{TlsError, TlsSettings};
