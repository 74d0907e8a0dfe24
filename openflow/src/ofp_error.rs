//! `OFPT_ERROR` messages, decoded to names (OpenFlow 1.3/1.4 `ofp_error_type` and codes, the ONF
//! bundle errors OVS sends for OpenFlow 1.3, and the Nicira ones Open vSwitch uses; names as in
//! OVS's ofp-errors.h), with the header of the request that failed.

use std::fmt;

use crate::error::DecodeError;
use crate::header::{type_name, Header, HEADER_LEN};
use crate::nx::NX_VENDOR_ID;
use crate::wire::Reader;

const OFPET_EXPERIMENTER: u16 = 0xffff;

/// What the switch refused, decoded from an `OFPT_ERROR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfpError {
    /// `ofp_error_type` (0xffff: experimenter).
    pub err_type: u16,
    /// The code (for experimenter errors, the experimenter's code).
    pub code: u16,
    /// The experimenter id of an experimenter error (0x4f4e4600 ONF, 0x00002320 Nicira).
    pub experimenter: Option<u32>,
    /// The start of the request that failed, as the switch echoed it (at least its header).
    pub data: Vec<u8>,
}

impl OfpError {
    /// Decodes the body of an `OFPT_ERROR` (the whole message, header included).
    pub fn decode(message: &[u8]) -> Result<OfpError, DecodeError> {
        let mut r = Reader::new(message);
        r.skip(HEADER_LEN, "OpenFlow header")?;
        let err_type = r.u16("error type")?;
        let code = r.u16("error code")?;
        let experimenter = if err_type == OFPET_EXPERIMENTER { Some(r.u32("error experimenter")?) } else { None };
        Ok(OfpError { err_type, code, experimenter, data: r.rest().to_vec() })
    }

    /// The header of the request that failed, when the switch sent it back.
    pub fn failed_header(&self) -> Option<Header> {
        Header::parse(&self.data).ok()
    }

    /// `OFPET_*` name of the type (`OFPET_BAD_ACTION`); for experimenter errors the
    /// experimenter (`ONF`, `NX`).
    pub fn type_name(&self) -> &'static str {
        match self.experimenter {
            Some(0x4f4e_4600) => "ONF",
            Some(NX_VENDOR_ID) => "NX",
            Some(_) => "OFPET_EXPERIMENTER",
            None => TYPES.get(usize::from(self.err_type)).map_or("OFPET_UNKNOWN", |(n, _)| *n),
        }
    }

    /// The code's name (`OFPBAC_BAD_OUT_PORT`), when known.
    pub fn code_name(&self) -> Option<&'static str> {
        let c = usize::from(self.code);
        match self.experimenter {
            Some(0x4f4e_4600) => match self.code {
                2300..=2315 => BUNDLE_FAILED.get(c - 2300).copied(),
                2600 => Some("OFPBIC_DUP_INST"),
                4250 => Some("OFPBAC_BAD_SET_MASK"),
                _ => None,
            },
            Some(NX_VENDOR_ID) => NX_CODES.iter().find(|(n, _)| usize::from(*n) == c).map(|(_, s)| *s),
            Some(_) => None,
            None => TYPES.get(usize::from(self.err_type)).and_then(|(_, codes)| codes.get(c).copied()),
        }
    }

    /// True for the error that says one message of a bundle failed (the failing message's own
    /// error comes separately).
    pub fn is_bundle_msg_failed(&self) -> bool {
        self.code_name() == Some("OFPBFC_MSG_FAILED")
    }
}

impl fmt::Display for OfpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code_name() {
            Some(name) => write!(f, "{name}")?,
            None => write!(f, "{} code {}", self.type_name(), self.code)?,
        }
        match self.experimenter {
            Some(e) => write!(f, " (experimenter {e:#010x}, code {})", self.code)?,
            None => write!(f, " (type {} {}, code {})", self.err_type, self.type_name(), self.code)?,
        }
        if let Some(h) = self.failed_header() {
            write!(f, " for {} xid {}", type_name(h.msg_type), h.xid)?;
        }
        Ok(())
    }
}

const HELLO_FAILED: &[&str] = &["OFPHFC_INCOMPATIBLE", "OFPHFC_EPERM"];
const BAD_REQUEST: &[&str] = &[
    "OFPBRC_BAD_VERSION",
    "OFPBRC_BAD_TYPE",
    "OFPBRC_BAD_MULTIPART",
    "OFPBRC_BAD_EXPERIMENTER",
    "OFPBRC_BAD_EXP_TYPE",
    "OFPBRC_EPERM",
    "OFPBRC_BAD_LEN",
    "OFPBRC_BUFFER_EMPTY",
    "OFPBRC_BUFFER_UNKNOWN",
    "OFPBRC_BAD_TABLE_ID",
    "OFPBRC_IS_SLAVE",
    "OFPBRC_BAD_PORT",
    "OFPBRC_BAD_PACKET",
    "OFPBRC_MULTIPART_BUFFER_OVERFLOW",
    "OFPBRC_MULTIPART_REQUEST_TIMEOUT",
    "OFPBRC_MULTIPART_REPLY_TIMEOUT",
];
const BAD_ACTION: &[&str] = &[
    "OFPBAC_BAD_TYPE",
    "OFPBAC_BAD_LEN",
    "OFPBAC_BAD_EXPERIMENTER",
    "OFPBAC_BAD_EXP_TYPE",
    "OFPBAC_BAD_OUT_PORT",
    "OFPBAC_BAD_ARGUMENT",
    "OFPBAC_EPERM",
    "OFPBAC_TOO_MANY",
    "OFPBAC_BAD_QUEUE",
    "OFPBAC_BAD_OUT_GROUP",
    "OFPBAC_MATCH_INCONSISTENT",
    "OFPBAC_UNSUPPORTED_ORDER",
    "OFPBAC_BAD_TAG",
    "OFPBAC_BAD_SET_TYPE",
    "OFPBAC_BAD_SET_LEN",
    "OFPBAC_BAD_SET_ARGUMENT",
];
const BAD_INSTRUCTION: &[&str] = &[
    "OFPBIC_UNKNOWN_INST",
    "OFPBIC_UNSUP_INST",
    "OFPBIC_BAD_TABLE_ID",
    "OFPBIC_UNSUP_METADATA",
    "OFPBIC_UNSUP_METADATA_MASK",
    "OFPBIC_BAD_EXPERIMENTER",
    "OFPBIC_BAD_EXP_TYPE",
    "OFPBIC_BAD_LEN",
    "OFPBIC_EPERM",
    "OFPBIC_DUP_INST",
];
const BAD_MATCH: &[&str] = &[
    "OFPBMC_BAD_TYPE",
    "OFPBMC_BAD_LEN",
    "OFPBMC_BAD_TAG",
    "OFPBMC_BAD_DL_ADDR_MASK",
    "OFPBMC_BAD_NW_ADDR_MASK",
    "OFPBMC_BAD_WILDCARDS",
    "OFPBMC_BAD_FIELD",
    "OFPBMC_BAD_VALUE",
    "OFPBMC_BAD_MASK",
    "OFPBMC_BAD_PREREQ",
    "OFPBMC_DUP_FIELD",
    "OFPBMC_EPERM",
];
const FLOW_MOD_FAILED: &[&str] = &[
    "OFPFMFC_UNKNOWN",
    "OFPFMFC_TABLE_FULL",
    "OFPFMFC_BAD_TABLE_ID",
    "OFPFMFC_OVERLAP",
    "OFPFMFC_EPERM",
    "OFPFMFC_BAD_TIMEOUT",
    "OFPFMFC_BAD_COMMAND",
    "OFPFMFC_BAD_FLAGS",
];
const GROUP_MOD_FAILED: &[&str] = &[
    "OFPGMFC_GROUP_EXISTS",
    "OFPGMFC_INVALID_GROUP",
    "OFPGMFC_WEIGHT_UNSUPPORTED",
    "OFPGMFC_OUT_OF_GROUPS",
    "OFPGMFC_OUT_OF_BUCKETS",
    "OFPGMFC_CHAINING_UNSUPPORTED",
    "OFPGMFC_WATCH_UNSUPPORTED",
    "OFPGMFC_LOOP",
    "OFPGMFC_UNKNOWN_GROUP",
    "OFPGMFC_CHAINED_GROUP",
    "OFPGMFC_BAD_TYPE",
    "OFPGMFC_BAD_COMMAND",
    "OFPGMFC_BAD_BUCKET",
    "OFPGMFC_BAD_WATCH",
    "OFPGMFC_EPERM",
];
const PORT_MOD_FAILED: &[&str] =
    &["OFPPMFC_BAD_PORT", "OFPPMFC_BAD_HW_ADDR", "OFPPMFC_BAD_CONFIG", "OFPPMFC_BAD_ADVERTISE", "OFPPMFC_EPERM"];
const TABLE_MOD_FAILED: &[&str] = &["OFPTMFC_BAD_TABLE", "OFPTMFC_BAD_CONFIG", "OFPTMFC_EPERM"];
const QUEUE_OP_FAILED: &[&str] = &["OFPQOFC_BAD_PORT", "OFPQOFC_BAD_QUEUE", "OFPQOFC_EPERM"];
const SWITCH_CONFIG_FAILED: &[&str] = &["OFPSCFC_BAD_FLAGS", "OFPSCFC_BAD_LEN", "OFPSCFC_EPERM"];
const ROLE_REQUEST_FAILED: &[&str] = &["OFPRRFC_STALE", "OFPRRFC_UNSUP", "OFPRRFC_BAD_ROLE"];
const METER_MOD_FAILED: &[&str] = &[
    "OFPMMFC_UNKNOWN",
    "OFPMMFC_METER_EXISTS",
    "OFPMMFC_INVALID_METER",
    "OFPMMFC_UNKNOWN_METER",
    "OFPMMFC_BAD_COMMAND",
    "OFPMMFC_BAD_FLAGS",
    "OFPMMFC_BAD_RATE",
    "OFPMMFC_BAD_BURST",
    "OFPMMFC_BAD_BAND",
    "OFPMMFC_BAD_BAND_VALUE",
    "OFPMMFC_OUT_OF_METERS",
    "OFPMMFC_OUT_OF_BANDS",
];
const TABLE_FEATURES_FAILED: &[&str] = &[
    "OFPTFFC_BAD_TABLE",
    "OFPTFFC_BAD_METADATA",
    "OFPTFFC_BAD_TYPE",
    "OFPTFFC_BAD_LEN",
    "OFPTFFC_BAD_ARGUMENT",
    "OFPTFFC_EPERM",
];
const BAD_PROPERTY: &[&str] = &[
    "OFPBPC_BAD_TYPE",
    "OFPBPC_BAD_LEN",
    "OFPBPC_BAD_VALUE",
    "OFPBPC_TOO_MANY",
    "OFPBPC_DUP_TYPE",
    "OFPBPC_BAD_EXPERIMENTER",
    "OFPBPC_BAD_EXP_TYPE",
    "OFPBPC_BAD_EXP_VALUE",
    "OFPBPC_EPERM",
];
const ASYNC_CONFIG_FAILED: &[&str] = &["OFPACFC_INVALID", "OFPACFC_UNSUPPORTED", "OFPACFC_EPERM"];
const FLOW_MONITOR_FAILED: &[&str] = &[
    "OFPMOFC_UNKNOWN",
    "OFPMOFC_MONITOR_EXISTS",
    "OFPMOFC_INVALID_MONITOR",
    "OFPMOFC_UNKNOWN_MONITOR",
    "OFPMOFC_BAD_COMMAND",
    "OFPMOFC_BAD_FLAGS",
    "OFPMOFC_BAD_TABLE_ID",
    "OFPMOFC_BAD_OUT",
];
const BUNDLE_FAILED: &[&str] = &[
    "OFPBFC_UNKNOWN",
    "OFPBFC_EPERM",
    "OFPBFC_BAD_ID",
    "OFPBFC_BUNDLE_EXIST",
    "OFPBFC_BUNDLE_CLOSED",
    "OFPBFC_OUT_OF_BUNDLES",
    "OFPBFC_BAD_TYPE",
    "OFPBFC_BAD_FLAGS",
    "OFPBFC_MSG_BAD_LEN",
    "OFPBFC_MSG_BAD_XID",
    "OFPBFC_MSG_UNSUP",
    "OFPBFC_MSG_CONFLICT",
    "OFPBFC_MSG_TOO_MANY",
    "OFPBFC_MSG_FAILED",
    "OFPBFC_TIMEOUT",
    "OFPBFC_BUNDLE_IN_PROGRESS",
];

const TYPES: &[(&str, &[&str])] = &[
    ("OFPET_HELLO_FAILED", HELLO_FAILED),
    ("OFPET_BAD_REQUEST", BAD_REQUEST),
    ("OFPET_BAD_ACTION", BAD_ACTION),
    ("OFPET_BAD_INSTRUCTION", BAD_INSTRUCTION),
    ("OFPET_BAD_MATCH", BAD_MATCH),
    ("OFPET_FLOW_MOD_FAILED", FLOW_MOD_FAILED),
    ("OFPET_GROUP_MOD_FAILED", GROUP_MOD_FAILED),
    ("OFPET_PORT_MOD_FAILED", PORT_MOD_FAILED),
    ("OFPET_TABLE_MOD_FAILED", TABLE_MOD_FAILED),
    ("OFPET_QUEUE_OP_FAILED", QUEUE_OP_FAILED),
    ("OFPET_SWITCH_CONFIG_FAILED", SWITCH_CONFIG_FAILED),
    ("OFPET_ROLE_REQUEST_FAILED", ROLE_REQUEST_FAILED),
    ("OFPET_METER_MOD_FAILED", METER_MOD_FAILED),
    ("OFPET_TABLE_FEATURES_FAILED", TABLE_FEATURES_FAILED),
    ("OFPET_BAD_PROPERTY", BAD_PROPERTY),
    ("OFPET_ASYNC_CONFIG_FAILED", ASYNC_CONFIG_FAILED),
    ("OFPET_FLOW_MONITOR_FAILED", FLOW_MONITOR_FAILED),
    ("OFPET_BUNDLE_FAILED", BUNDLE_FAILED),
];

/// Nicira experimenter error codes (OpenFlow 1.2+ form) Open vSwitch sends.
const NX_CODES: &[(u16, &str)] = &[
    (2, "NXBRC_NXM_INVALID"),
    (3, "NXBRC_NXM_BAD_TYPE"),
    (4, "NXBRC_MUST_BE_ZERO"),
    (5, "NXBRC_BAD_REASON"),
    (10, "NXBRC_UNENCODABLE_ERROR"),
    (11, "NXBAC_MUST_BE_ZERO"),
    (12, "NXFMFC_HARDWARE"),
    (13, "NXFMFC_BAD_TABLE_ID"),
    (15, "NXBAC_BAD_CONJUNCTION"),
    (22, "OFPBFC_BAD_VERSION"),
    (37, "NXFMFC_INVALID_TLV_FIELD"),
    (42, "NXBAC_CT_DATAPATH_SUPPORT"),
    (43, "NXBMC_CT_DATAPATH_SUPPORT"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let mut msg = vec![4, 1, 0, 20, 0, 0, 0, 9, 0, 3, 0, 2];
        msg.extend_from_slice(&[4, 14, 0, 88, 0, 0, 0, 9]);
        let e = OfpError::decode(&msg).unwrap();
        assert_eq!(e.type_name(), "OFPET_BAD_INSTRUCTION");
        assert_eq!(e.code_name(), Some("OFPBIC_BAD_TABLE_ID"));
        assert_eq!(e.failed_header().unwrap().xid, 9);
        assert_eq!(e.to_string(), "OFPBIC_BAD_TABLE_ID (type 3 OFPET_BAD_INSTRUCTION, code 2) for FLOW_MOD xid 9");
        // ONF bundle error for OpenFlow 1.3: type 0xffff, exp_code 2313, ONF id.
        let msg = [4, 1, 0, 16, 0, 0, 0, 3, 0xff, 0xff, 0x09, 0x09, 0x4f, 0x4e, 0x46, 0];
        let e = OfpError::decode(&msg).unwrap();
        assert!(e.is_bundle_msg_failed(), "{e}");
        // OpenFlow 1.4 form (17, 13).
        let msg = [5, 1, 0, 12, 0, 0, 0, 3, 0, 17, 0, 13];
        assert!(OfpError::decode(&msg).unwrap().is_bundle_msg_failed());
        // Unknown type and code still print.
        let msg = [5, 1, 0, 12, 0, 0, 0, 3, 0, 99, 0, 1];
        assert_eq!(OfpError::decode(&msg).unwrap().to_string(), "OFPET_UNKNOWN code 1 (type 99 OFPET_UNKNOWN, code 1)");
        assert!(OfpError::decode(&msg[..10]).is_err());
    }
}
