//! The plug logic against in-memory fakes of etcd, OVSDB and netlink: what a plug, an unplug,
//! the start-up recovery and the dead-container reaper decide, without root. The real
//! components are exercised by the multi-host tests in `tests/`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use overlay::model::IpClaim;
use overlay::naming::container_port_name;

use super::*;
use fakes::{FakeLinks, FakeRecords, FakeSwitch, HOST, HOST_NETNS, ME};
use world::{endpoint, red, red_world, World};

mod fakes;
mod plug;
mod publish;
mod removal;
mod world;
