//! Error types, one per area. Messages say what was wrong and what to do about it, and do not
//! repeat their source: the caller prints the whole chain once.

use std::net::IpAddr;

use ipnet::IpNet;
use thiserror::Error;

/// A value of the data model (a name, a VNI, a CIDR, a MAC, a JSON record) was invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ModelError {
    /// VNIs are 24 bits on the wire and 0 means "no key" to OVS.
    #[error("VNI {vni} is out of range: use 1..=16777215")]
    VniOutOfRange {
        /// The rejected value.
        vni: u64,
    },
    /// The text was not a number at all.
    #[error("VNI {input:?} is not a number: use 1..=16777215")]
    VniNotANumber {
        /// The rejected text.
        input: String,
    },
    /// Only the two tunnel types the data plane builds are accepted.
    #[error("unknown tunnel type {input:?}: use \"vxlan\" or \"gre\"")]
    UnknownTunnelType {
        /// The rejected text.
        input: String,
    },
    /// Tenant names become etcd key segments.
    #[error(
        "tenant name {name:?} is invalid: use 1 to 63 characters from A-Z a-z 0-9 _ . -, \
         starting with a letter or digit"
    )]
    InvalidTenantName {
        /// The rejected name.
        name: String,
    },
    /// Hostnames become etcd key segments and tunnel port name seeds.
    #[error(
        "hostname {name:?} is invalid: use 1 to 253 characters from A-Z a-z 0-9 - ., \
         starting and ending with a letter or digit, without \"..\""
    )]
    InvalidHostname {
        /// The rejected hostname.
        name: String,
    },
    /// Container ids become etcd key segments.
    #[error(
        "container id {id:?} is invalid: use 1 to 128 characters from A-Z a-z 0-9 _ . -, \
         starting with a letter or digit"
    )]
    InvalidContainerId {
        /// The rejected id.
        id: String,
    },
    /// A CIDR such as 10.0.0.1/16 is almost always a typo for the network.
    #[error("CIDR {cidr} has host bits set: use the network address {network}")]
    CidrHostBits {
        /// What was given.
        cidr: IpNet,
        /// What was probably meant.
        network: IpNet,
    },
    /// Subnet leases are slices of the tenant CIDR, so they cannot be bigger than it.
    #[error(
        "subnet length /{subnet_len} is shorter than the tenant CIDR {cidr}: \
         use a length between /{} and /{max}", cidr.prefix_len()
    )]
    SubnetLenTooShort {
        /// The rejected length.
        subnet_len: u8,
        /// The tenant CIDR.
        cidr: IpNet,
        /// The longest length accepted for this family.
        max: u8,
    },
    /// A lease must hold the network address, at least two usable addresses and (IPv4) a
    /// broadcast address.
    #[error(
        "subnet length /{subnet_len} leaves fewer than 4 addresses per host: \
         use /{max} or shorter"
    )]
    SubnetLenTooLong {
        /// The rejected length.
        subnet_len: u8,
        /// The longest length accepted for this family.
        max: u8,
    },
    /// The gateway is derived from the CIDR; a stored one that differs means a corrupt record.
    #[error(
        "tenant {tenant:?} stores gateway {stored} but its CIDR gives {expected}: \
         rewrite the tenant record"
    )]
    GatewayMismatch {
        /// The tenant.
        tenant: String,
        /// The gateway found in the record.
        stored: IpAddr,
        /// The gateway the CIDR gives.
        expected: IpAddr,
    },
    /// A lease that does not fit its tenant is ignored rather than used.
    #[error(
        "subnet {subnet} does not fit tenant {tenant:?} ({cidr}, leases of /{subnet_len}): \
         delete the lease"
    )]
    LeaseOutsideTenant {
        /// The leased subnet.
        subnet: IpNet,
        /// The tenant.
        tenant: String,
        /// The tenant CIDR.
        cidr: IpNet,
        /// The tenant's lease length.
        subnet_len: u8,
    },
    /// Lease key segments look like `10.1.2.0-24`.
    #[error("subnet key segment {input:?} is invalid: use <network address>-<prefix length>, e.g. 10.1.2.0-24")]
    InvalidLeaseKey {
        /// The rejected segment.
        input: String,
    },
    /// MACs are written as six colon-separated hex pairs.
    #[error("MAC address {input:?} is malformed: use six hex pairs separated by colons, e.g. 02:42:ac:11:00:02")]
    InvalidMac {
        /// The rejected text.
        input: String,
    },
    /// A container MAC must be a unicast address, or frames to it are flooded or dropped.
    #[error(
        "MAC address {mac} is not a unicast address: clear the lowest bit of the first byte \
         (or let the agent generate one)"
    )]
    NotUnicastMac {
        /// The rejected MAC.
        mac: String,
    },
    /// An underlay IP that cannot be a tunnel endpoint.
    #[error("underlay IP {ip} of host {host:?} cannot be a tunnel endpoint: use the host's unicast address on the underlay network")]
    InvalidUnderlayIp {
        /// The host.
        host: String,
        /// The rejected address.
        ip: IpAddr,
    },
    /// The system id is what lets a restarted agent recognise its own registration.
    #[error("host {host:?} has an empty or unprintable system id: set Open_vSwitch external_ids:system-id")]
    InvalidSystemId {
        /// The host.
        host: String,
    },
    /// An endpoint's port name must be a Linux interface name.
    #[error("interface name {name:?} is invalid: use 1 to 15 characters from a-z 0-9 -")]
    InvalidInterfaceName {
        /// The rejected name.
        name: String,
    },
    /// An endpoint's iface-id must be present: OVS tooling keys on it.
    #[error(
        "iface-id {id:?} is invalid: use 1 to 128 characters from A-Z a-z 0-9 _ . -, \
         starting with a letter or digit"
    )]
    InvalidIfaceId {
        /// The rejected id.
        id: String,
    },
    /// An endpoint's owner label has characters a label may not have.
    #[error("owner {owner:?} is invalid: use 1 to 200 characters from A-Z a-z 0-9 _ . : / -")]
    InvalidOwner {
        /// The rejected label.
        owner: String,
    },
    /// A JSON record from etcd could not be decoded.
    #[error("{what} record is not valid JSON for this version: {message}; rewrite or delete the key")]
    Json {
        /// The kind of record ("tenant", "host", ...).
        what: &'static str,
        /// The decoder's message (kept as text so the error stays comparable).
        message: String,
    },
}

/// An address or subnet request could not be satisfied.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IpamError {
    /// An IPv4 address for an IPv6 tenant or the reverse.
    #[error("address {addr} is not of the same IP family as tenant {tenant:?} ({cidr}): use an address inside {cidr}")]
    FamilyMismatch {
        /// The requested address.
        addr: IpAddr,
        /// The tenant.
        tenant: String,
        /// The tenant CIDR.
        cidr: IpNet,
    },
    /// The address is outside the tenant's CIDR.
    #[error("address {addr} is outside tenant {tenant:?} ({cidr}): use an address inside {cidr}")]
    OutsideTenant {
        /// The requested address.
        addr: IpAddr,
        /// The tenant.
        tenant: String,
        /// The tenant CIDR.
        cidr: IpNet,
    },
    /// The network address identifies the subnet, it is not a host.
    #[error("address {addr} is the network address of tenant {tenant:?}: pick a host address")]
    NetworkAddress {
        /// The requested address.
        addr: IpAddr,
        /// The tenant.
        tenant: String,
    },
    /// Sending to the broadcast address reaches every container of the tenant.
    #[error("address {addr} is the broadcast address of tenant {tenant:?}: pick a host address")]
    BroadcastAddress {
        /// The requested address.
        addr: IpAddr,
        /// The tenant.
        tenant: String,
    },
    /// Every host answers for the gateway; a container holding it would break routing.
    #[error("address {addr} is the gateway of tenant {tenant:?}: pick another address")]
    GatewayAddress {
        /// The requested address.
        addr: IpAddr,
        /// The tenant.
        tenant: String,
    },
}

/// Local VLANs ran out.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VlanError {
    /// Only 4094 tags exist (0 and 4095 are reserved by 802.1Q).
    #[error(
        "no local VLAN left for tenant {tenant:?}: all 4094 are in use on this host \
         ({needed} tenants need one); take part in fewer tenants on this host"
    )]
    Exhausted {
        /// The first tenant left without a VLAN.
        tenant: String,
        /// How many tenants needed one.
        needed: usize,
    },
}

/// The container MTU could not be derived from the underlay MTU.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MtuError {
    /// No link has an MTU above the IPv4/IPv6 packet length limit (jumbograms aside).
    #[error("underlay MTU {mtu} is above 65535: check the configured or detected underlay MTU")]
    UnderlayTooLarge {
        /// The rejected MTU.
        mtu: u32,
    },
    /// The tunnel header leaves too little room for the containers' IP version.
    #[error(
        "underlay MTU {underlay_mtu} minus {overhead} bytes of tunnel overhead leaves {}, \
         below the {min} bytes {family} needs: raise the underlay MTU to at least {}",
        underlay_mtu.saturating_sub(*overhead), min + overhead
    )]
    TooSmall {
        /// The underlay MTU.
        underlay_mtu: u32,
        /// The tunnel overhead subtracted from it.
        overhead: u32,
        /// The minimum container MTU.
        min: u32,
        /// "IPv4" or "IPv6" (the containers' family).
        family: &'static str,
    },
}

/// The desired state could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DesiredError {
    /// See [`VlanError`].
    #[error(transparent)]
    Vlan(#[from] VlanError),
    /// Bridge names come from configuration.
    #[error(
        "bridge names must be non-empty and different (integration {int:?}, tunnel {tun:?}): fix the configuration"
    )]
    BridgeNames {
        /// The integration bridge name.
        int: String,
        /// The tunnel bridge name.
        tun: String,
    },
}

/// A published port (`--publish`) is malformed or twice in one request.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PublishError {
    /// Not `HOST_PORT:CONTAINER_PORT[/tcp|/udp]` with ports 1..=65535.
    #[error("published port {input:?} is malformed: use HOST_PORT:CONTAINER_PORT[/tcp|/udp], e.g. 8080:80/tcp")]
    Malformed {
        /// What was given.
        input: String,
    },
    /// One request publishes one host port twice.
    #[error("host port {host_port}/{protocol} is published twice in one request: give each host port once")]
    Twice {
        /// The port.
        host_port: u16,
        /// Its protocol.
        protocol: crate::publish::Protocol,
    },
}

/// A tenant's control-plane allow-list holds something that is not a network.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GatewayError {
    /// An allow-list entry with host bits.
    #[error("allow-list entry {cidr} has host bits set: use the network address {network}")]
    AllowHostBits {
        /// The entry.
        cidr: IpNet,
        /// What it should be.
        network: IpNet,
    },
    /// The transit range cannot hold a pair for every local VLAN.
    #[error(
        "gateway transit range {cidr} is too small: it needs a /19 or larger IPv4 range (two addresses per \
         tenant VLAN), e.g. 169.254.64.0/19"
    )]
    TransitTooSmall {
        /// The range.
        cidr: IpNet,
    },
}
