//! Errors of the pure layer: bytes that do not decode ([`DecodeError`]), values that cannot be
//! encoded ([`EncodeError`]), matches and flows that Open vSwitch would refuse, found before
//! anything is sent ([`MatchError`], [`FlowError`]). The switch's own error messages are
//! [`crate::OfpError`]; the client's failures are [`crate::ClientError`].

use crate::oxm::Field;

/// Bytes from the switch that are not a well-formed OpenFlow message. After one of these the
/// stream cannot be trusted: the client closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A structure ends before the field being read.
    #[error("truncated OpenFlow data: {what} needs {need} bytes, {have} left")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes it needs.
        need: usize,
        /// Bytes left in the enclosing structure.
        have: usize,
    },
    /// A length field that cannot be right (shorter than its own header, not a multiple of 8
    /// where the spec requires it, longer than the enclosing structure).
    #[error("bad length in {what}: {len}{}", if reason.is_empty() { String::new() } else { format!(" ({reason})") })]
    BadLength {
        /// The structure.
        what: &'static str,
        /// The length it claims.
        len: usize,
        /// Why it is wrong.
        reason: &'static str,
    },
    /// A message of a version this client did not negotiate.
    #[error("OpenFlow message with version 0x{got:02x}, but the session speaks 0x{want:02x}")]
    BadVersion {
        /// The version in the header.
        got: u8,
        /// The negotiated version.
        want: u8,
    },
    /// A value the spec does not allow (an unknown flow_mod command, a field value wider than
    /// the field, ...).
    #[error("bad value in {what}: {detail}")]
    BadValue {
        /// The structure or field.
        what: &'static str,
        /// The value and why it is wrong.
        detail: String,
    },
    /// A message of a type the client does not expect where it came.
    #[error("unexpected OpenFlow message type {msg_type} ({name})")]
    UnexpectedType {
        /// The header's type.
        msg_type: u8,
        /// Its name, if known.
        name: &'static str,
    },
}

/// A value that cannot be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A message or structure longer than OpenFlow's 16-bit length field allows.
    #[error("OpenFlow structure of {len} bytes exceeds the 65535-byte limit; split the flow's actions")]
    TooLong {
        /// The length it would have.
        len: usize,
    },
}

/// A match Open vSwitch would refuse, found while building it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    /// A field whose prerequisite (`eth_type`, `ip_proto`, ...) is missing or different.
    #[error("match on {field} needs {needs}; add that match first")]
    MissingPrerequisite {
        /// The field that needs it.
        field: Field,
        /// The prerequisite, in ovs-fields(7) words (`eth_type=0x0800 (ip)`).
        needs: String,
    },
    /// A mask on a field that only matches exactly.
    #[error("{field} cannot be masked (ovs-fields(7): exact match or wildcard only)")]
    NotMaskable {
        /// The field.
        field: Field,
    },
    /// A value wider than the field.
    #[error("value 0x{value:x} does not fit {field} ({bits} bits)")]
    ValueTooWide {
        /// The field.
        field: Field,
        /// The value given.
        value: u128,
        /// The field's width.
        bits: u32,
    },
    /// A field that does not exist (`reg16`).
    #[error("no field {name} (registers are reg0..reg15)")]
    NoSuchField {
        /// The name asked for.
        name: String,
    },
    /// The same field twice (OVS refuses it with OFPBMC_DUP_FIELD).
    #[error("{field} is matched twice")]
    Duplicate {
        /// The field.
        field: Field,
    },
}

/// A flow Open vSwitch would refuse, found while building it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// The match itself is invalid.
    #[error(transparent)]
    Match(#[from] MatchError),
    /// An action that needs something the match does not give (OVS answers
    /// OFPBAC_MATCH_INCONSISTENT).
    #[error("action {index} ({action}) needs {needs} in the match")]
    ActionPrerequisite {
        /// Index of the action in its action list.
        index: usize,
        /// The action, as ovs-ofctl would print it.
        action: String,
        /// What the match must hold.
        needs: String,
    },
    /// `goto_table` to a table that is not after this one (OVS answers OFPBIC_BAD_TABLE_ID).
    #[error("goto_table:{to} from table {from}: a flow may only go to a later table")]
    GotoBackwards {
        /// This flow's table.
        from: u8,
        /// The target.
        to: u8,
    },
    /// A field range (move source or destination, ct zone) outside its field.
    #[error("{what}: bits {ofs}..{end} lie outside {field} ({bits} bits)")]
    BadFieldRange {
        /// Which operand.
        what: &'static str,
        /// The field.
        field: Field,
        /// First bit.
        ofs: u16,
        /// One past the last bit.
        end: u32,
        /// Width of the field.
        bits: u32,
    },
    /// The encoded flow does not fit one OpenFlow message.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}
