//! Splits the JSON-RPC byte stream into messages.
//!
//! OVSDB sends JSON texts back to back with no length prefix or delimiter (RFC 7047 section 4
//! uses JSON-RPC 1.0 over a stream). The framer finds where each top-level object ends by
//! tracking nesting depth and string state, resuming where the previous read stopped, so every
//! byte is scanned once however the stream is cut: several messages in one read, one message
//! over many reads, or a message of tens of megabytes, all cost linear time. Only a complete
//! message is handed on, as its text ([`Framer::next_text`]) or parsed
//! ([`Framer::next_message`]).

use serde_json::Value as Json;

use crate::error::RpcError;

/// Default upper bound on one message; a full `monitor` of a large Open_vSwitch database is tens
/// of megabytes, so this leaves ample room while still stopping a runaway peer.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 256 * 1024 * 1024;

/// Incremental splitter of a byte stream into JSON values.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    /// Start of the message being scanned (bytes before it are consumed).
    start: usize,
    /// Next byte to scan.
    pos: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
    max_message_size: usize,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE_SIZE)
    }
}

impl Framer {
    /// A framer refusing messages larger than `max_message_size` bytes.
    pub fn new(max_message_size: usize) -> Self {
        Framer { buf: Vec::new(), start: 0, pos: 0, depth: 0, in_string: false, escaped: false, max_message_size }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        // Drop consumed bytes before growing, so the buffer holds at most one message and one
        // read, and the copy happens at most once per read.
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.pos -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as a message.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete message, parsed; `Ok(None)` when more bytes are needed. After an
    /// error the stream cannot be resynchronised; the connection must be closed.
    pub fn next_message(&mut self) -> Result<Option<Json>, RpcError> {
        let Some(text) = self.next_text()? else { return Ok(None) };
        serde_json::from_slice(&text).map(Some).map_err(|e| RpcError::Protocol(format!("invalid JSON message: {e}")))
    }

    /// The next complete message as its JSON text, not parsed (so not known to be valid JSON);
    /// `Ok(None)` when more bytes are needed. After an error the stream cannot be
    /// resynchronised; the connection must be closed.
    pub fn next_text(&mut self) -> Result<Option<Vec<u8>>, RpcError> {
        while self.pos < self.buf.len() {
            let b = self.buf[self.pos];
            if self.depth == 0 {
                match b {
                    b' ' | b'\t' | b'\r' | b'\n' => {
                        self.pos += 1;
                        self.start = self.pos;
                        continue;
                    }
                    b'{' | b'[' => {}
                    other => {
                        return Err(RpcError::Protocol(format!(
                            "expected the start of a JSON-RPC message, got byte 0x{other:02x}"
                        )))
                    }
                }
            }
            self.pos += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return Ok(Some(self.take_message()));
                    }
                }
                _ => {}
            }
        }
        if self.pos - self.start > self.max_message_size {
            return Err(RpcError::MessageTooLarge { limit: self.max_message_size });
        }
        Ok(None)
    }

    /// Hands over the message that ends at `pos`. A message at least as long as what follows
    /// it in the buffer takes the buffer itself, and only what follows (usually less than one
    /// read) moves to a new one: a message of tens of megabytes is not copied, and the
    /// connection does not keep a buffer of that size for good (it did: 16 MiB after a large
    /// monitor reply). A shorter one is copied out, so a read holding many small messages
    /// costs linear time, not a copy of the rest of the read per message.
    fn take_message(&mut self) -> Vec<u8> {
        let len = self.pos - self.start;
        if len < self.buf.len() - self.pos {
            let text = self.buf[self.start..self.pos].to_vec();
            self.start = self.pos;
            return text;
        }
        let rest = self.buf.split_off(self.pos);
        let mut text = std::mem::replace(&mut self.buf, rest);
        text.drain(..self.start);
        self.start = 0;
        self.pos = 0;
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn all(f: &mut Framer) -> Vec<Json> {
        let mut out = Vec::new();
        while let Some(m) = f.next_message().unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn several_messages_in_one_read() {
        let mut f = Framer::default();
        f.push(
            br#"{"id":1,"result":[]} {"id":2,"result":{"a":"}"}}
{"method":"echo","params":[],"id":"x"}"#,
        );
        let msgs = all(&mut f);
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[1]["result"]["a"], "}");
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn one_message_split_at_every_byte() {
        let text = br#"{"id":7,"result":["a\"]{","b\\",{"x":[1,2,{"y":null}]}]}"#;
        for cut in 0..text.len() {
            let mut f = Framer::default();
            f.push(&text[..cut]);
            assert!(f.next_message().unwrap().is_none(), "cut {cut}");
            f.push(&text[cut..]);
            let m = f.next_message().unwrap().unwrap();
            assert_eq!(m["result"][1], "b\\");
        }
        // And one byte at a time.
        let mut f = Framer::default();
        let mut got = None;
        for b in text {
            f.push(std::slice::from_ref(b));
            if let Some(m) = f.next_message().unwrap() {
                got = Some(m);
            }
        }
        assert_eq!(got.unwrap()["id"], 7);
    }

    #[test]
    fn garbage_and_bad_json_are_errors() {
        let mut f = Framer::default();
        f.push(b"hello");
        assert!(matches!(f.next_message(), Err(RpcError::Protocol(_))));
        let mut f = Framer::default();
        f.push(b"{\"a\":tru}");
        assert!(matches!(f.next_message(), Err(RpcError::Protocol(_))));
    }

    #[test]
    fn size_limit() {
        let mut f = Framer::new(100);
        f.push(format!("{{\"x\":\"{}", "a".repeat(200)).as_bytes());
        assert!(matches!(f.next_message(), Err(RpcError::MessageTooLarge { limit: 100 })));
    }

    #[test]
    fn large_message_in_small_chunks() {
        // 20 MB in 4 KiB reads: a framer that re-scans from the start on every read would do
        // 5000 passes over a growing buffer and take minutes; this one finishes in well under
        // a second (the timing itself is in the benchmark, not asserted here).
        let big = json!({"id": 1, "result": "x".repeat(20 << 20)}).to_string();
        let mut f = Framer::default();
        let mut got = None;
        for chunk in big.as_bytes().chunks(4096) {
            f.push(chunk);
            if let Some(m) = f.next_message().unwrap() {
                got = Some(m);
            }
        }
        assert_eq!(got.unwrap()["result"].as_str().unwrap().len(), 20 << 20);
        assert_eq!(f.buf.capacity(), 0, "the 20 MB buffer went with the message");
    }

    #[test]
    fn text_of_messages_with_what_surrounds_them() {
        let mut f = Framer::default();
        f.push(b" {\"a\":1}\n[2] {\"b\":");
        assert_eq!(f.next_text().unwrap().unwrap(), b"{\"a\":1}");
        assert_eq!(f.next_text().unwrap().unwrap(), b"[2]");
        assert!(f.next_text().unwrap().is_none());
        f.push(b"\"x\"}{}");
        assert_eq!(f.next_text().unwrap().unwrap(), b"{\"b\":\"x\"}");
        assert_eq!(f.next_text().unwrap().unwrap(), b"{}");
        assert_eq!(f.pending(), 0);
    }
}
