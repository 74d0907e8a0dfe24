//! `/overlay/subnets/...`: the slices of tenant CIDRs that hosts hold, and their key segments.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::host::validate_underlay_ip;
use super::{decode, encode, validate_hostname, validate_tenant_name, Tenant};
use crate::error::ModelError;

/// `/overlay/subnets/<tenant>/<a.b.c.d-len>`: a slice of a tenant CIDR owned by one host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SubnetLease {
    /// The tenant.
    pub tenant: String,
    /// The leased subnet (a network address).
    pub subnet: IpNet,
    /// The owning host.
    pub host: String,
    /// The owner's underlay IP when it took the lease (the host record is authoritative).
    pub underlay_ip: IpAddr,
}

impl SubnetLease {
    /// Checks names and that the subnet is a network address.
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_tenant_name(&self.tenant)?;
        validate_hostname(&self.host)?;
        validate_underlay_ip(&self.host, self.underlay_ip)?;
        if self.subnet.trunc() != self.subnet {
            return Err(ModelError::CidrHostBits { cidr: self.subnet, network: self.subnet.trunc() });
        }
        Ok(())
    }

    /// Checks that the lease is a `subnet_len` slice of the tenant's CIDR.
    pub fn validate_for(&self, tenant: &Tenant) -> Result<(), ModelError> {
        self.validate()?;
        let cidr = tenant.cidr();
        let fits = self.tenant == tenant.name()
            && self.subnet.prefix_len() == tenant.subnet_len()
            && self.subnet.max_prefix_len() == cidr.max_prefix_len()
            && cidr.contains(&self.subnet.network());
        if fits {
            Ok(())
        } else {
            Err(ModelError::LeaseOutsideTenant {
                subnet: self.subnet,
                tenant: tenant.name().to_owned(),
                cidr,
                subnet_len: tenant.subnet_len(),
            })
        }
    }

    /// Decodes and validates a lease record from etcd.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelError> {
        let l: Self = decode("subnet lease", bytes)?;
        l.validate()?;
        Ok(l)
    }

    /// The JSON written to etcd.
    pub fn to_json(&self) -> Vec<u8> {
        encode(self)
    }
}

/// The etcd key segment of a subnet: `10.1.2.0-24` (a `/` would split the key).
pub fn lease_key_segment(subnet: &IpNet) -> String {
    format!("{}-{}", subnet.network(), subnet.prefix_len())
}

/// Parses [`lease_key_segment`] output back; rejects host bits.
pub fn parse_lease_key_segment(segment: &str) -> Result<IpNet, ModelError> {
    let bad = || ModelError::InvalidLeaseKey { input: segment.to_owned() };
    let (addr, len) = segment.rsplit_once('-').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let net = IpNet::new(addr, len).map_err(|_| bad())?;
    if net.trunc() != net {
        return Err(bad());
    }
    Ok(net)
}
