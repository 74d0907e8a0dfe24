//! Published ports (`docker run -p` semantics): a port of the host's underlay address that
//! reaches a port of a container, written `HOST:CONTAINER[/tcp|/udp]` (tcp when left out).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::PublishError;

/// The transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// The IP protocol number (6 or 17).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One published port of a container interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Publish {
    /// The port on the host's underlay address.
    pub host_port: u16,
    /// The port inside the container.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

impl Publish {
    /// Checks that neither port is 0.
    pub fn validate(&self) -> Result<(), PublishError> {
        if self.host_port == 0 || self.port == 0 {
            return Err(PublishError::Malformed { input: self.to_string() });
        }
        Ok(())
    }

    /// What identifies the host side: two publishes with the same key cannot coexist on a host.
    pub fn host_key(&self) -> (u16, Protocol) {
        (self.host_port, self.protocol)
    }
}

impl fmt::Display for Publish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.host_port, self.port, self.protocol)
    }
}

impl FromStr for Publish {
    type Err = PublishError;
    fn from_str(s: &str) -> Result<Self, PublishError> {
        let bad = || PublishError::Malformed { input: s.to_owned() };
        let (ports, protocol) = match s.split_once('/') {
            None => (s, Protocol::Tcp),
            Some((p, "tcp")) => (p, Protocol::Tcp),
            Some((p, "udp")) => (p, Protocol::Udp),
            Some(_) => return Err(bad()),
        };
        let (host, port) = ports.split_once(':').ok_or_else(bad)?;
        let number = |p: &str| -> Result<u16, PublishError> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse::<u16>().ok().filter(|n| *n > 0).ok_or_else(bad)
        };
        Ok(Publish { host_port: number(host)?, port: number(port)?, protocol })
    }
}

/// Checks a list of publishes of one plug: each valid, no host port twice.
pub fn validate_list(list: &[Publish]) -> Result<(), PublishError> {
    let mut seen = std::collections::BTreeSet::new();
    for p in list {
        p.validate()?;
        if !seen.insert(p.host_key()) {
            return Err(PublishError::Twice { host_port: p.host_port, protocol: p.protocol });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let p: Publish = "8080:80/tcp".parse().unwrap();
        assert_eq!(p, Publish { host_port: 8080, port: 80, protocol: Protocol::Tcp });
        assert_eq!(p.to_string(), "8080:80/tcp");
        assert_eq!("53:5353/udp".parse::<Publish>().unwrap().protocol, Protocol::Udp);
        assert_eq!("8080:80".parse::<Publish>().unwrap().protocol, Protocol::Tcp, "tcp when left out");
        for bad in ["", "8080", ":80", "8080:", "0:80", "80:0", "65536:80", "8080:80/sctp", "8080:80/", "a:b", "+1:2"] {
            assert!(bad.parse::<Publish>().is_err(), "{bad:?}");
        }
        let e = "x".parse::<Publish>().unwrap_err().to_string();
        assert!(e.contains("HOST_PORT:CONTAINER_PORT"), "{e}");
    }

    #[test]
    fn json_shape() {
        let p: Publish = "8080:80/udp".parse().unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"host_port":8080,"port":80,"protocol":"udp"}"#);
    }

    #[test]
    fn a_list_may_not_take_one_host_port_twice() {
        let a: Publish = "8080:80/tcp".parse().unwrap();
        let b: Publish = "8080:81/tcp".parse().unwrap();
        let c: Publish = "8080:80/udp".parse().unwrap();
        assert!(validate_list(&[a, c]).is_ok(), "tcp and udp are different ports");
        assert!(matches!(validate_list(&[a, b]), Err(PublishError::Twice { host_port: 8080, .. })));
    }
}
