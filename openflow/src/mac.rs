//! Ethernet addresses.

use std::fmt;
use std::str::FromStr;

/// A 48-bit Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// The address as the low 48 bits of a field value.
    pub fn to_u128(self) -> u128 {
        crate::oxm::value_of(&self.0)
    }

    /// The low 48 bits of a field value as an address.
    pub fn from_u128(v: u128) -> Mac {
        let b = v.to_be_bytes();
        let mut m = [0u8; 6];
        m.copy_from_slice(&b[10..]);
        Mac(m)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

/// A string that is not `xx:xx:xx:xx:xx:xx`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an Ethernet address (want xx:xx:xx:xx:xx:xx)")]
pub struct BadMac(pub String);

impl FromStr for Mac {
    type Err = BadMac;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut m = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut m {
            let p = parts.next().filter(|p| p.len() == 2).ok_or_else(|| BadMac(s.into()))?;
            *b = u8::from_str_radix(p, 16).map_err(|_| BadMac(s.into()))?;
        }
        if parts.next().is_some() {
            return Err(BadMac(s.into()));
        }
        Ok(Mac(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_print() {
        let m: Mac = "02:00:00:00:01:0a".parse().unwrap();
        assert_eq!(m.to_string(), "02:00:00:00:01:0a");
        assert_eq!(Mac::from_u128(m.to_u128()), m);
        for bad in ["", "02:00:00:00:01", "02:00:00:00:01:0a:00", "2:00:00:00:01:0a", "zz:00:00:00:01:0a"] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }
}
