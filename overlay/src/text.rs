//! Decimal, hexadecimal and address text on the stack.
//!
//! The diff compares every tunnel port's `options` and `external_ids` (VNIs, VLANs, IPs) with
//! what OVSDB holds, 20,000 ports per pass at the scale the agent is built for. Through
//! `format!` each number costs a heap string and a few hundred instructions of `core::fmt`;
//! these produce the same text in a stack buffer for a fraction of that.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// Room for the longest IPv6 text (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255` is 45).
const CAP: usize = 48;

/// A short string built on the stack.
#[derive(Clone, Copy)]
pub(crate) struct StackText {
    buf: [u8; CAP],
    len: usize,
}

impl StackText {
    fn new() -> Self {
        Self { buf: [0; CAP], len: 0 }
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn push_u32(&mut self, mut v: u32) {
        let mut digits = [0u8; 10];
        let mut n = 0;
        loop {
            digits[n] = b'0' + (v % 10) as u8;
            n += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        for &d in digits[..n].iter().rev() {
            self.push(d);
        }
    }

    /// The text as bytes: comparing these skips the UTF-8 check of [`StackText::as_str`].
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII digits, dots and `core::fmt` output (valid UTF-8) are ever pushed.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > CAP {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// `v` in decimal, as `v.to_string()`.
pub(crate) fn decimal(v: u32) -> StackText {
    let mut t = StackText::new();
    t.push_u32(v);
    t
}

/// `ip` as its `Display` text. IPv4 (the usual underlay) is written directly; IPv6 goes
/// through `core::fmt`, whose compression rules are not worth repeating here.
pub(crate) fn ip(ip: IpAddr) -> StackText {
    match ip {
        IpAddr::V4(v4) => ipv4(v4),
        IpAddr::V6(v6) => {
            let mut t = StackText::new();
            // 45 bytes always fit.
            let _ = fmt::Write::write_fmt(&mut t, format_args!("{v6}"));
            t
        }
    }
}

fn ipv4(ip: Ipv4Addr) -> StackText {
    let mut t = StackText::new();
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            t.push(b'.');
        }
        if octet >= 100 {
            t.push(b'0' + octet / 100);
        }
        if octet >= 10 {
            t.push(b'0' + octet / 10 % 10);
        }
        t.push(b'0' + octet % 10);
    }
    t
}

/// The low `digits` nibbles of `v` as lowercase hex, zero-padded, as `format!("{v:0digits$x}")`.
pub(crate) fn push_hex(out: &mut String, v: u64, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        out.push(char::from(HEX[((v >> (4 * i)) & 0xf) as usize]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::Rng;

    #[test]
    fn decimal_matches_to_string() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let fixed = [0, 1, 9, 10, 99, 100, 4094, 65535, 16_777_215, u32::MAX];
        for v in fixed.into_iter().chain((0..10_000).map(|_| rng.next() as u32 >> (rng.below(32) as u32))) {
            assert_eq!(decimal(v).as_str(), v.to_string());
        }
    }

    #[test]
    fn addresses_match_display() {
        let mut rng = Rng(0x0bad_cafe_0bad_cafe);
        let fixed =
            ["0.0.0.0", "255.255.255.255", "10.0.0.1", "192.168.100.7", "::", "::1", "fd00::2", "::ffff:1.2.3.4"];
        let random = (0..5_000).flat_map(|_| {
            let v4 = IpAddr::from((rng.next() as u32).to_be_bytes());
            let v6 = IpAddr::from(((u128::from(rng.next()) << 64) | u128::from(rng.next())).to_be_bytes());
            [v4, v6]
        });
        let all: Vec<IpAddr> = fixed.iter().map(|s| s.parse().unwrap()).chain(random).collect();
        for a in all {
            assert_eq!(ip(a).as_str(), a.to_string());
        }
        let longest: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        assert_eq!(ip(longest).as_str(), longest.to_string());
    }

    #[test]
    fn hex_matches_format() {
        let mut rng = Rng(0xfeed_f00d_dead_beef);
        for _ in 0..10_000 {
            let v = rng.next() >> rng.below(64);
            let mut s = String::new();
            push_hex(&mut s, v >> 16, 12);
            assert_eq!(s, format!("{:012x}", v >> 16));
        }
    }
}
