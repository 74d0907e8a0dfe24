//! Errors, one type per kind of failure: a value that does not parse, a row that does not fit the
//! schema, a transport/JSON-RPC failure, and a transaction that the server refused.

use std::time::Duration;

use serde_json::Value as Json;

/// A JSON value that is not a well-formed OVSDB value, or a value of the wrong Rust type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValueError {
    message: String,
}

impl ValueError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        ValueError { message: message.into() }
    }
}

/// A schema that could not be parsed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid schema: {location}: {reason}")]
pub struct SchemaError {
    /// Where in the schema (`table Bridge, column ports`).
    pub location: String,
    /// What is wrong there.
    pub reason: String,
}

/// Data that does not fit the database schema, found before anything was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The database has no such table.
    #[error("table '{table}' does not exist in database '{database}'")]
    UnknownTable {
        /// The database.
        database: String,
        /// The table asked for.
        table: String,
    },
    /// The table has no such column.
    #[error("table '{table}' has no column '{column}'")]
    UnknownColumn {
        /// The table.
        table: String,
        /// The column asked for.
        column: String,
    },
    /// The column exists but the value does not fit its type.
    #[error("table '{table}', column '{column}': {reason}")]
    BadValue {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// Why the value does not fit.
        reason: String,
    },
    /// The column may not be written (`_uuid`, `_version`, or `mutable: false` on update).
    #[error("table '{table}', column '{column}' is read-only{why}")]
    ReadOnly {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// Extra explanation.
        why: String,
    },
    /// The operation itself is malformed (e.g. a named-uuid used but never inserted).
    #[error("operation {index}: {reason}")]
    BadOperation {
        /// Index of the operation in the transaction.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

/// A failure below the level of one OVSDB operation: connecting, the byte stream, JSON-RPC.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The remote string is not one this client understands.
    #[error("bad OVSDB remote '{remote}': {reason}")]
    BadRemote {
        /// The remote as given.
        remote: String,
        /// Why it was refused and what to use.
        reason: String,
    },
    /// Could not connect.
    #[error("cannot connect to OVSDB at {remote}: {source} (is ovsdb-server running and listening there?)")]
    Connect {
        /// The remote.
        remote: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS settings of an `ssl:` remote cannot be used (a file missing or not PEM, a host
    /// that cannot be a TLS server name).
    #[error("cannot use TLS for OVSDB at {remote}: {source}")]
    Tls {
        /// The remote.
        remote: String,
        /// What is wrong with the settings.
        #[source]
        source: ovs_transport::TlsError,
    },
    /// Reading or writing the connection failed.
    #[error("OVSDB connection I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The connection closed while the request was in flight or before it was sent.
    #[error("OVSDB connection closed ({reason}); the request may or may not have been applied")]
    Disconnected {
        /// Why the connection closed.
        reason: String,
    },
    /// No connection is up (a reconnecting client between attempts).
    #[error("not connected to OVSDB at {remote}; retrying in the background")]
    NotConnected {
        /// The remote.
        remote: String,
    },
    /// The peer sent bytes that are not JSON-RPC.
    #[error("OVSDB protocol error: {0}")]
    Protocol(String),
    /// One message exceeded the configured size limit.
    #[error("OVSDB message larger than the {limit} byte limit; raise max_message_size if this is expected")]
    MessageTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// No reply within the request timeout.
    #[error("OVSDB request '{method}' got no reply within {after:?}")]
    Timeout {
        /// The JSON-RPC method.
        method: String,
        /// The timeout.
        after: Duration,
    },
    /// The server answered with a JSON-RPC error object.
    #[error("OVSDB server refused '{method}': {error}")]
    Server {
        /// The JSON-RPC method.
        method: String,
        /// The error object as sent.
        error: Json,
    },
    /// The reply did not have the shape RFC 7047 gives it.
    #[error("malformed reply to '{method}': {reason}")]
    MalformedReply {
        /// The JSON-RPC method.
        method: String,
        /// What was wrong.
        reason: String,
    },
}

impl RpcError {
    /// True when the server said it does not know the method (an older ovsdb-server).
    pub fn is_unknown_method(&self) -> bool {
        match self {
            RpcError::Server { error, .. } => {
                let text = error.to_string();
                text.contains("unknown method") || text.contains("unknown-method")
            }
            _ => false,
        }
    }
}

/// What kind of error an operation or the commit reported (RFC 7047 section 5.2, ovsdb-server(7)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OvsdbErrorKind {
    /// `referential integrity violation`: a strong reference to a row that does not exist, or
    /// a row deleted while still referenced.
    ReferentialIntegrityViolation,
    /// `constraint violation`: a value outside its column's constraints, a duplicate index, ...
    ConstraintViolation,
    /// `resources exhausted`.
    ResourcesExhausted,
    /// `I/O error`.
    IoError,
    /// `duplicate uuid-name`.
    DuplicateUuidName,
    /// `domain error` (arithmetic mutation).
    DomainError,
    /// `range error` (arithmetic mutation).
    RangeError,
    /// `timed out`: a `wait` operation's condition did not become true.
    TimedOut,
    /// `not supported`.
    NotSupported,
    /// `aborted`: the transaction contained an `abort` operation.
    Aborted,
    /// `not owner`: an `assert` on a lock this session does not hold.
    NotOwner,
    /// Any other error string.
    Other(String),
}

impl OvsdbErrorKind {
    fn from_str(s: &str) -> Self {
        match s {
            "referential integrity violation" => Self::ReferentialIntegrityViolation,
            "constraint violation" => Self::ConstraintViolation,
            "resources exhausted" => Self::ResourcesExhausted,
            "I/O error" => Self::IoError,
            "duplicate uuid-name" => Self::DuplicateUuidName,
            "domain error" => Self::DomainError,
            "range error" => Self::RangeError,
            "timed out" => Self::TimedOut,
            "not supported" => Self::NotSupported,
            "aborted" => Self::Aborted,
            "not owner" => Self::NotOwner,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// One error object from a transaction result: `{"error": .., "details": ..}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}{}", details.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
pub struct OvsdbError {
    /// The classified error.
    pub kind: OvsdbErrorKind,
    /// The error string as sent.
    pub error: String,
    /// The server's explanation, when it gave one.
    pub details: Option<String>,
}

impl OvsdbError {
    pub(crate) fn from_json(json: &Json) -> Option<Self> {
        let error = json.get("error")?.as_str()?.to_owned();
        Some(OvsdbError {
            kind: OvsdbErrorKind::from_str(&error),
            details: json.get("details").and_then(Json::as_str).map(str::to_owned),
            error,
        })
    }
}

/// A transaction that did not commit.
#[derive(Debug, thiserror::Error)]
pub enum TransactError {
    /// Refused before sending: the operations do not fit the schema.
    #[error("transaction not sent: {0}")]
    Invalid(#[from] ValidationError),
    /// Transport or JSON-RPC failure; whether the transaction committed is unknown only when
    /// this is [`RpcError::Disconnected`] or [`RpcError::Timeout`].
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// Operation `index` failed, so the whole transaction was rolled back.
    #[error("operation {index} ({op} on {table}) failed: {error}")]
    Operation {
        /// Index of the failed operation.
        index: usize,
        /// The operation name (`insert`, `mutate`, ...).
        op: &'static str,
        /// The table it acted on (empty for `commit`, `comment`, ...).
        table: String,
        /// The error.
        error: OvsdbError,
    },
    /// Every operation succeeded but the commit failed (the extra result RFC 7047 appends),
    /// e.g. a referential integrity or constraint check on the final database state.
    #[error("transaction failed at commit: {0}")]
    Commit(OvsdbError),
    /// The reply did not have the shape RFC 7047 gives it.
    #[error("malformed transact reply: {0}")]
    MalformedReply(String),
}

impl TransactError {
    /// The OVSDB error, when the server refused an operation or the commit.
    pub fn ovsdb_error(&self) -> Option<&OvsdbError> {
        match self {
            TransactError::Operation { error, .. } | TransactError::Commit(error) => Some(error),
            _ => None,
        }
    }

    /// True when a `wait` (a verify of what was read) failed: another writer got in between;
    /// rebuild the transaction from the fresh replica and try again.
    pub fn is_verify_failure(&self) -> bool {
        matches!(
            self,
            TransactError::Operation { op: "wait", error: OvsdbError { kind: OvsdbErrorKind::TimedOut, .. }, .. }
        )
    }
}
