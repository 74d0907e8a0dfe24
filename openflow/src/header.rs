//! The OpenFlow message header (`version, type, length, xid`), message type numbers, and the
//! framer that cuts the byte stream from the switch into messages.

use crate::error::DecodeError;
use crate::wire::Put;

/// OpenFlow 1.3 wire version.
pub const OFP13_VERSION: u8 = 0x04;
/// OpenFlow 1.4 wire version.
pub const OFP14_VERSION: u8 = 0x05;
/// Bytes in the header.
pub const HEADER_LEN: usize = 8;

/// Message types used here (OpenFlow 1.3 / 1.4 `ofp_type`).
#[allow(missing_docs)]
pub mod msg_type {
    pub const HELLO: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const ECHO_REQUEST: u8 = 2;
    pub const ECHO_REPLY: u8 = 3;
    pub const EXPERIMENTER: u8 = 4;
    pub const FEATURES_REQUEST: u8 = 5;
    pub const FEATURES_REPLY: u8 = 6;
    pub const PACKET_IN: u8 = 10;
    pub const FLOW_REMOVED: u8 = 11;
    pub const PORT_STATUS: u8 = 12;
    pub const FLOW_MOD: u8 = 14;
    pub const MULTIPART_REQUEST: u8 = 18;
    pub const MULTIPART_REPLY: u8 = 19;
    pub const BARRIER_REQUEST: u8 = 20;
    pub const BARRIER_REPLY: u8 = 21;
    pub const ROLE_STATUS: u8 = 30;
    pub const TABLE_STATUS: u8 = 31;
    pub const REQUESTFORWARD: u8 = 32;
    pub const BUNDLE_CONTROL: u8 = 33;
    pub const BUNDLE_ADD_MESSAGE: u8 = 34;
}

/// The name of a message type, for logs and errors.
pub fn type_name(t: u8) -> &'static str {
    const NAMES: [&str; 35] = [
        "HELLO",
        "ERROR",
        "ECHO_REQUEST",
        "ECHO_REPLY",
        "EXPERIMENTER",
        "FEATURES_REQUEST",
        "FEATURES_REPLY",
        "GET_CONFIG_REQUEST",
        "GET_CONFIG_REPLY",
        "SET_CONFIG",
        "PACKET_IN",
        "FLOW_REMOVED",
        "PORT_STATUS",
        "PACKET_OUT",
        "FLOW_MOD",
        "GROUP_MOD",
        "PORT_MOD",
        "TABLE_MOD",
        "MULTIPART_REQUEST",
        "MULTIPART_REPLY",
        "BARRIER_REQUEST",
        "BARRIER_REPLY",
        "QUEUE_GET_CONFIG_REQUEST",
        "QUEUE_GET_CONFIG_REPLY",
        "ROLE_REQUEST",
        "ROLE_REPLY",
        "GET_ASYNC_REQUEST",
        "GET_ASYNC_REPLY",
        "SET_ASYNC",
        "METER_MOD",
        "ROLE_STATUS",
        "TABLE_STATUS",
        "REQUESTFORWARD",
        "BUNDLE_CONTROL",
        "BUNDLE_ADD_MESSAGE",
    ];
    NAMES.get(usize::from(t)).copied().unwrap_or("UNKNOWN")
}

/// A message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Wire version.
    pub version: u8,
    /// Message type.
    pub msg_type: u8,
    /// Length of the whole message.
    pub length: u16,
    /// Transaction id.
    pub xid: u32,
}

impl Header {
    /// Reads the first 8 bytes; checks only that the length covers the header.
    pub fn parse(bytes: &[u8]) -> Result<Header, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::Truncated { what: "OpenFlow header", need: HEADER_LEN, have: bytes.len() });
        }
        let h = Header {
            version: bytes[0],
            msg_type: bytes[1],
            length: u16::from_be_bytes([bytes[2], bytes[3]]),
            xid: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        };
        if usize::from(h.length) < HEADER_LEN {
            return Err(DecodeError::BadLength {
                what: "OpenFlow message",
                len: usize::from(h.length),
                reason: "shorter than the 8-byte header",
            });
        }
        Ok(h)
    }
}

/// Starts a message: writes a header with a zero length, to be set by [`finish_message`].
pub(crate) fn start_message(out: &mut Vec<u8>, version: u8, msg_type: u8, xid: u32) -> usize {
    let start = out.len();
    out.put_u8(version);
    out.put_u8(msg_type);
    out.put_u16(0);
    out.put_u32(xid);
    start
}

/// Fills in the length of the message that starts at `start`.
pub(crate) fn finish_message(out: &mut [u8], start: usize) -> Result<(), crate::error::EncodeError> {
    let len = out.len() - start;
    let len16 = u16::try_from(len).map_err(|_| crate::error::EncodeError::TooLong { len })?;
    out[start + 2..start + 4].copy_from_slice(&len16.to_be_bytes());
    Ok(())
}

/// Cuts a byte stream into whole OpenFlow messages: each begins with its header, whose length
/// says where the next begins. A length below 8 cannot be skipped over and ends the stream.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    start: usize,
}

impl Framer {
    /// An empty framer.
    pub fn new() -> Framer {
        Framer::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as a message.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole message (header included), `Ok(None)` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<&[u8]>, DecodeError> {
        let rest = &self.buf[self.start..];
        if rest.len() < HEADER_LEN {
            return Ok(None);
        }
        let h = Header::parse(rest)?;
        let len = usize::from(h.length);
        if rest.len() < len {
            return Ok(None);
        }
        let at = self.start;
        self.start += len;
        Ok(Some(&self.buf[at..at + len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framer_cuts_anywhere() {
        let mut stream = Vec::new();
        for xid in 1..=3u32 {
            let s = start_message(&mut stream, OFP13_VERSION, msg_type::ECHO_REPLY, xid);
            stream.extend_from_slice(&vec![xid as u8; xid as usize * 3]);
            finish_message(&mut stream, s).unwrap();
        }
        for cut in 0..=stream.len() {
            let mut f = Framer::new();
            let mut got = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                f.push(part);
                while let Some(m) = f.next_message().unwrap() {
                    got.push(Header::parse(m).unwrap().xid);
                }
            }
            assert_eq!(got, [1, 2, 3], "cut at {cut}");
            assert_eq!(f.pending(), 0);
        }
    }

    #[test]
    fn short_length_is_an_error() {
        let mut f = Framer::new();
        f.push(&[4, 0, 0, 7, 0, 0, 0, 1]);
        assert!(matches!(f.next_message(), Err(DecodeError::BadLength { len: 7, .. })));
    }
}
