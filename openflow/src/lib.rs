//! An OpenFlow 1.3/1.4 client for Open vSwitch, with the Nicira extensions an overlay needs.
//!
//! Two layers in one crate:
//! - Pure (always built, no I/O): typed flows ([`Flow`], [`Match`], [`Action`],
//!   [`Instructions`]), checked against Open vSwitch's prerequisites when built; their wire
//!   encoding ([`FlowMod`], [`FlowStatsRequest`], bundles) and a decoder of everything the
//!   switch sends ([`message::decode`], [`Framer`]); canonical values so that a flow read back
//!   from the switch is `==` to the flow installed; [`diff_flows`] for a reconciler.
//! - Client (feature `client`, on by default): a [`Connection`] multiplexing requests by xid,
//!   answering echoes and probing an idle switch; bundles applied atomically, streamed from an
//!   iterator ([`Connection::bundle_iter`]: memory is the encoded bundle, not the flows), with
//!   errors that name the failing flow_mod and show it; flow dumps decoded one multipart reply
//!   at a time, whole ([`Connection::dump_flows`]) or as cookies alone
//!   ([`Connection::dump_cookies`]); a [`Switch`] handle that reconnects with backoff and
//!   publishes a connection epoch.
//!
//! Layers, from the wire up: `wire` (bounded reads) → [`header`] (framing) → `oxm`
//! (fields) → `flow_match` → `match_builder` → `action` / `nx` → `instruction` →
//! `flow_mod` / `multipart` / `bundle` / `ofp_error` → [`message`] → `connection` →
//! `requests` / `bundling` → `switch`.
//!
//! # Example
//! ```
//! use std::net::Ipv4Addr;
//! use openflow_client::{diff_flows, Action, Field, Flow, FlowMod, Mac, Match};
//!
//! // table=1, priority=10, dl_vlan=1, dl_dst=02:00:00:00:01:02
//! //   actions=pop_vlan, set_field:198.18.0.2->tun_dst, output:10
//! let flow = Flow::builder(1, 10)
//!     .cookie(0x5a)
//!     .matching(Match::builder().vlan_vid(1).eth_dst("02:00:00:00:01:02".parse::<Mac>()?).build()?)
//!     .actions([
//!         Action::PopVlan,
//!         Action::set_field(Field::TunIpv4Dst, u32::from(Ipv4Addr::new(198, 18, 0, 2)).into()),
//!         Action::output(10),
//!     ])
//!     .build()?;
//! // A match that misses a prerequisite is refused, naming it.
//! let e = Match::builder().ipv4_dst(Ipv4Addr::new(198, 19, 0, 1)).build().unwrap_err();
//! assert_eq!(e.to_string(), "match on ipv4_dst needs eth_type=0x0800 (ip); add that match first");
//! // What a reconciler sends: nothing when the switch already holds the flow.
//! assert!(diff_flows(&[flow.clone()], &[flow.clone()]).is_empty());
//! assert_eq!(diff_flows(&[flow.clone()], &[]), vec![FlowMod::add(flow)]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod action;
mod bundle;
mod diff;
mod error;
mod flow_match;
mod flow_mod;
pub mod header;
mod instruction;
mod mac;
mod match_builder;
pub mod message;
mod multipart;
mod nx;
mod ofp_error;
mod oxm;
mod wire;

#[cfg(feature = "client")]
mod bundling;
#[cfg(feature = "client")]
mod client_error;
#[cfg(feature = "client")]
mod connection;
#[cfg(feature = "client")]
mod requests;
#[cfg(feature = "client")]
mod switch;
#[cfg(feature = "client")]
mod target;

pub use action::{port, Action, OFPCML_NO_BUFFER};
pub use bundle::{
    encode_bundle_add, BundleAdd, BundleCtrl, BundleCtrlType, OFPBF_ATOMIC, OFPBF_ORDERED, ONF_EXPERIMENTER_ID,
};
pub use diff::diff_flows;
pub use error::{DecodeError, EncodeError, FlowError, MatchError};
pub use flow_match::{
    Masked, Match, RawOxm, ETH_TYPE_ARP, ETH_TYPE_IP, ETH_TYPE_IPV6, ETH_TYPE_RARP, ETH_TYPE_VLAN, ICMPV6_ND_ADVERT,
    ICMPV6_ND_SOLICIT, OFPVID_PRESENT,
};
pub use flow_mod::{
    Flow, FlowBuilder, FlowKey, FlowMod, FlowModCommand, OFPFF_CHECK_OVERLAP, OFPFF_RESET_COUNTS, OFPFF_SEND_FLOW_REM,
    OFPG_ANY, OFPTT_ALL,
};
pub use header::{Framer, Header, OFP13_VERSION, OFP14_VERSION};
pub use instruction::Instructions;
pub use mac::{BadMac, Mac};
pub use match_builder::MatchBuilder;
pub use message::Features;
pub use multipart::{
    encode_flow_stats_reply, FlowCookie, FlowStats, FlowStatsRequest, MultipartReply, OFPMPF_REPLY_MORE, OFPMP_FLOW,
};
pub use nx::{Ct, CtZone, FieldRange, Nat, NatAddrs};
pub use ofp_error::OfpError;
pub use oxm::{Field, OxmId};

#[cfg(feature = "client")]
pub use bundling::MAX_BUNDLE_FLOW_MODS;
#[cfg(feature = "client")]
pub use client_error::{BundleFailure, ClientError};
#[cfg(feature = "client")]
pub use connection::{Connection, ConnectionOptions};
/// Why the TLS settings of an `ssl:` target cannot be used ([`ClientError::Tls`]).
#[cfg(feature = "client")]
pub use ovs_transport::TlsError;
/// Certificates for `ssl:` targets (the same settings, and verification, as OVSDB's).
#[cfg(feature = "client")]
pub use ovs_transport::TlsSettings;
#[cfg(feature = "client")]
pub use switch::{Switch, SwitchOptions, SwitchState};
#[cfg(feature = "client")]
pub use target::{mgmt_socket, Target, DEFAULT_OVS_RUNDIR};
