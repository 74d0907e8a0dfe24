//! Identifiers and names: VNIs, tunnel types, and the checks that keep tenant names,
//! container ids, owners and hostnames safe as etcd key segments.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// The largest VNI: VXLAN VNIs are 24 bits (RFC 7348); GRE keys are 32 but we keep one range.
pub const VNI_MAX: u32 = 16_777_215;

/// A tenant's virtual network identifier: the VXLAN VNI or GRE key on the wire.
///
/// 0 is excluded because OVS treats `options:key=0` as "no key".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Vni(u32);

impl Vni {
    /// Validates the range 1..=16_777_215.
    pub fn new(vni: u32) -> Result<Self, ModelError> {
        if (1..=VNI_MAX).contains(&vni) {
            Ok(Self(vni))
        } else {
            Err(ModelError::VniOutOfRange { vni: vni.into() })
        }
    }

    /// The numeric value.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Vni {
    type Error = ModelError;
    fn try_from(v: u32) -> Result<Self, ModelError> {
        Self::new(v)
    }
}

impl From<Vni> for u32 {
    fn from(v: Vni) -> u32 {
        v.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Vni {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        let v: u64 = s.trim().parse().map_err(|_| ModelError::VniNotANumber { input: s.to_owned() })?;
        u32::try_from(v).map_err(|_| ModelError::VniOutOfRange { vni: v }).and_then(Self::new)
    }
}

/// The encapsulation of a tenant's tunnels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelType {
    /// VXLAN over UDP 4789 (RFC 7348).
    Vxlan,
    /// GRE with a key (RFC 2890).
    Gre,
}

impl TunnelType {
    /// Both types, for iteration in tests and CLI help.
    pub const ALL: [TunnelType; 2] = [TunnelType::Vxlan, TunnelType::Gre];

    /// The lowercase name, which is also the OVS `Interface.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelType::Vxlan => "vxlan",
            TunnelType::Gre => "gre",
        }
    }
}

impl fmt::Display for TunnelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TunnelType {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "vxlan" => Ok(TunnelType::Vxlan),
            "gre" => Ok(TunnelType::Gre),
            _ => Err(ModelError::UnknownTunnelType { input: s.to_owned() }),
        }
    }
}

/// `[A-Za-z0-9][A-Za-z0-9_.-]{0,max-1}`: safe as an etcd key segment (no `/`, cannot be `.`
/// or `..`).
pub(super) fn is_token(s: &str, max_len: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max_len
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Checks a tenant name: `[A-Za-z0-9][A-Za-z0-9_.-]{0,62}`.
pub fn validate_tenant_name(name: &str) -> Result<(), ModelError> {
    if is_token(name, 63) {
        Ok(())
    } else {
        Err(ModelError::InvalidTenantName { name: name.to_owned() })
    }
}

/// Checks a container id: `[A-Za-z0-9][A-Za-z0-9_.-]{0,127}` (Docker ids are 64 hex digits).
pub fn validate_container_id(id: &str) -> Result<(), ModelError> {
    if is_token(id, 128) {
        Ok(())
    } else {
        Err(ModelError::InvalidContainerId { id: id.to_owned() })
    }
}

/// Checks an endpoint's owner label: 1 to 200 characters of `[A-Za-z0-9_.:/-]`.
pub fn validate_owner(owner: &str) -> Result<(), ModelError> {
    let ok = !owner.is_empty()
        && owner.len() <= 200
        && owner.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':' | b'/' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ModelError::InvalidOwner { owner: owner.to_owned() })
    }
}

/// Checks a hostname, RFC 1123 style: letters, digits, `-` and `.`, at most 253 characters,
/// starting and ending with a letter or digit, no empty label (`..`).
pub fn validate_hostname(name: &str) -> Result<(), ModelError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 253
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.'))
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(ModelError::InvalidHostname { name: name.to_owned() })
    }
}
