//! Failures of the client: reaching the switch, the session, and the switch refusing what was
//! sent, named down to the flow_mod.

use std::time::Duration;

use crate::error::{DecodeError, EncodeError, FlowError};
use crate::ofp_error::OfpError;

/// A bundle the switch did not apply. Atomic bundles leave the switch as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFailure {
    /// Where it failed: `open`, `add` (the switch refused a message as it was added; the
    /// bundle was then discarded), or `commit`.
    pub stage: &'static str,
    /// Index, in the order given, of the flow_mod the switch refused, when it named one.
    pub index: Option<usize>,
    /// That flow_mod, as ovs-ofctl would write it (decoded from the bytes sent).
    pub flow_mod: Option<String>,
    /// The switch's error for it (or for the bundle, when no message was named).
    pub error: OfpError,
    /// Flow_mods added to the bundle: all of them at commit; at add, those produced before
    /// the refusal was seen (the iterator is not drawn further).
    pub len: usize,
}

impl std::fmt::Display for BundleFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.len {
            0 => write!(f, "bundle not applied (failed at {}): ", self.stage)?,
            n => write!(f, "bundle of {n} flow_mods not applied (failed at {}): ", self.stage)?,
        }
        match (self.index, &self.flow_mod) {
            (Some(i), Some(m)) => write!(f, "flow_mod {i} ({m}) refused: {}", self.error)?,
            _ => write!(f, "{}", self.error)?,
        }
        if self.error.code_name() == Some("OFPBFC_TIMEOUT") {
            f.write_str(
                "; the switch dropped the bundle after receiving nothing for its idle timeout \
                 (ovs-vswitchd other_config:bundle-idle-timeout, 10 s by default): produce the flow_mods \
                 faster or raise it",
            )?;
        }
        Ok(())
    }
}

/// What went wrong talking to the switch.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The target string is not one this client understands.
    #[error("bad OpenFlow target '{target}': {reason}")]
    BadTarget {
        /// The target as given.
        target: String,
        /// Why, and what to use.
        reason: String,
    },
    /// Could not open the stream.
    #[error("cannot connect to the switch at {target}: {source} (is ovs-vswitchd running and the bridge created?)")]
    Connect {
        /// The target.
        target: String,
        /// The OS or TLS error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS settings of an `ssl:` target cannot be used (a file missing or not PEM, a host
    /// that cannot be a TLS server name).
    #[error("cannot use TLS for the switch at {target}: {source}")]
    Tls {
        /// The target.
        target: String,
        /// What is wrong with the settings.
        #[source]
        source: ovs_transport::TlsError,
    },
    /// The hello exchange failed: no common version, or the switch said no.
    #[error("OpenFlow handshake with {target} failed: {reason}")]
    Handshake {
        /// The target.
        target: String,
        /// Why.
        reason: String,
    },
    /// The session ended while the request was in flight or before it was sent; whether the
    /// switch applied it is unknown (a bundle not committed is discarded by the switch).
    #[error("OpenFlow connection closed ({reason}); the request may or may not have been applied")]
    Disconnected {
        /// Why the session ended.
        reason: String,
    },
    /// No session is up (a reconnecting [`crate::Switch`] between attempts).
    #[error("not connected to the switch at {target}; reconnecting in the background")]
    NotConnected {
        /// The target.
        target: String,
    },
    /// No session came up within the time a caller waited ([`crate::Switch::wait_connected`]).
    #[error("no OpenFlow session with the switch at {target} within {after:?}{}",
            match last_error { Some(e) => format!(" (last attempt: {e})"), None => String::new() })]
    NotConnectedWithin {
        /// The target.
        target: String,
        /// How long the caller waited.
        after: Duration,
        /// Why the last attempt to connect failed, if one did.
        last_error: Option<String>,
    },
    /// No reply in time.
    #[error("OpenFlow {request} got no reply within {after:?}")]
    Timeout {
        /// What was asked.
        request: String,
        /// The timeout.
        after: Duration,
    },
    /// The switch sent bytes that are not OpenFlow; the session was closed.
    #[error("OpenFlow protocol error from the switch: {0}")]
    Protocol(#[from] DecodeError),
    /// A request that cannot be encoded.
    #[error("cannot encode the request: {0}")]
    Encode(#[from] EncodeError),
    /// A flow_mod refused before sending: Open vSwitch would reject it.
    #[error("flow_mod {index} ({flow_mod}) not sent: {error}")]
    Invalid {
        /// Its index in the list given.
        index: usize,
        /// The flow_mod.
        flow_mod: String,
        /// What is wrong.
        error: FlowError,
    },
    /// The switch refused a request that was not in a bundle (earlier ones of the same call
    /// were applied).
    #[error("the switch refused {request}: {error}")]
    Rejected {
        /// The request (for a list of flow_mods, `flow_mod N (...)`).
        request: String,
        /// Index of the flow_mod in the list given, if it was one.
        index: Option<usize>,
        /// The switch's error.
        error: OfpError,
    },
    /// A bundle that was not applied.
    #[error("{0}")]
    Bundle(Box<BundleFailure>),
    /// More flow_mods than one bundle can carry; nothing was applied.
    #[error(
        "a bundle carries at most {limit} flow_mods (the xids one bundle reserves); split them into several bundles"
    )]
    BundleTooLarge {
        /// The most one bundle carries.
        limit: usize,
    },
    /// A reply of a kind the request does not expect.
    #[error("unexpected reply to {request}: {got}")]
    UnexpectedReply {
        /// The request.
        request: String,
        /// What came.
        got: String,
    },
}

impl ClientError {
    /// The switch's error, when it refused something.
    pub fn ofp_error(&self) -> Option<&OfpError> {
        match self {
            ClientError::Rejected { error, .. } => Some(error),
            ClientError::Bundle(b) => Some(&b.error),
            _ => None,
        }
    }

    /// True when the session is gone (retry on the next one).
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            ClientError::Disconnected { .. }
                | ClientError::NotConnected { .. }
                | ClientError::NotConnectedWithin { .. }
        )
    }
}
