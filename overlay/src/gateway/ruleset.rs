//! The netfilter tables of the gateway as plain values: one table per namespace, with its
//! address sets, base chains and rules, in the few forms the gateway needs. The agent encodes a
//! [`Table`] into nf_tables netlink messages; [`fmt::Display`] prints it in `nft` syntax (what
//! `nft list table` shows), for logs, docs and tests.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::publish::Protocol;

/// The name of the agent's table in every namespace it programs (family `ip`).
pub const TABLE: &str = "overlay_agent";

/// A table of family `ip`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Table {
    /// Its name.
    pub name: String,
    /// Its sets of IPv4 addresses.
    pub sets: Vec<Set>,
    /// Its chains, all base chains.
    pub chains: Vec<Chain>,
}

/// A named set of IPv4 addresses (`type ipv4_addr`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Set {
    /// Its name.
    pub name: String,
    /// Its elements, sorted, without duplicates.
    pub elements: Vec<Ipv4Addr>,
}

/// The netfilter hook a base chain is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// Before routing.
    Prerouting,
    /// To this namespace.
    Input,
    /// Through this namespace.
    Forward,
    /// From this namespace.
    Output,
    /// After routing.
    Postrouting,
}

impl Hook {
    /// The kernel's number (`NF_INET_*`).
    pub fn number(self) -> u32 {
        match self {
            Hook::Prerouting => 0,
            Hook::Input => 1,
            Hook::Forward => 2,
            Hook::Output => 3,
            Hook::Postrouting => 4,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }
}

/// The type of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainType {
    /// Filtering.
    Filter,
    /// Address translation (consulted for the first packet of a connection only).
    Nat,
}

impl ChainType {
    /// The kernel's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
        }
    }
}

/// A base chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chain {
    /// Its name.
    pub name: String,
    /// Its type.
    pub kind: ChainType,
    /// Its hook.
    pub hook: Hook,
    /// Its priority (NAT: -100 before routing, 100 after; filter: 0).
    pub priority: i32,
    /// What happens to a packet no rule decided on: accept (`false`) or drop (`true`).
    pub drop_by_default: bool,
    /// Its rules, in order.
    pub rules: Vec<Rule>,
}

/// A rule: every match holds, then the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// What the packet must be.
    pub matches: Vec<Match>,
    /// What happens to it.
    pub verdict: Verdict,
}

/// One condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Match {
    /// Came in on this interface.
    Iif(String),
    /// Goes out on this interface.
    Oif(String),
    /// Source address in this network.
    Saddr(Ipv4Net),
    /// Destination address in this network.
    Daddr(Ipv4Net),
    /// Destination address not in this network.
    DaddrNot(Ipv4Net),
    /// Destination address in the named set.
    DaddrIn(String),
    /// Transport protocol (and destination port, if any).
    Dport(Protocol, Option<u16>),
    /// ICMP.
    Icmp,
    /// Part of a connection conntrack has seen both ways, or related to one (an ICMP error).
    EstablishedOrRelated,
    /// Conntrack could not place it.
    Invalid,
    /// Its connection was destination-translated (a published port).
    Dnatted,
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Let it through.
    Accept,
    /// Drop it, counted.
    Drop,
    /// Rewrite the source address.
    Snat(Ipv4Addr),
    /// Rewrite the destination address and port.
    Dnat(Ipv4Addr, u16),
}

impl Rule {
    /// A rule of `matches` and `verdict`.
    pub fn new(matches: Vec<Match>, verdict: Verdict) -> Rule {
        Rule { matches, verdict }
    }
}

impl Table {
    /// A content hash of the table, the same on every run: a table with this fingerprint needs
    /// no rewrite.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = crate::fnv::FnvHasher::default();
        self.hash(&mut h);
        h.finish()
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "table ip {} {{", self.name)?;
        for s in &self.sets {
            let elements: Vec<String> = s.elements.iter().map(Ipv4Addr::to_string).collect();
            writeln!(f, "\tset {} {{\n\t\ttype ipv4_addr", s.name)?;
            if !elements.is_empty() {
                writeln!(f, "\t\telements = {{ {} }}", elements.join(", "))?;
            }
            writeln!(f, "\t}}")?;
        }
        for c in &self.chains {
            writeln!(f, "\tchain {} {{", c.name)?;
            let policy = if c.drop_by_default { "drop" } else { "accept" };
            writeln!(
                f,
                "\t\ttype {} hook {} priority {}; policy {policy};",
                c.kind.as_str(),
                c.hook.name(),
                c.priority
            )?;
            for r in &c.rules {
                writeln!(f, "\t\t{r}")?;
            }
            writeln!(f, "\t}}")?;
        }
        writeln!(f, "}}")
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.matches {
            match m {
                Match::Iif(i) => write!(f, "iifname \"{i}\" ")?,
                Match::Oif(o) => write!(f, "oifname \"{o}\" ")?,
                Match::Saddr(n) => write!(f, "ip saddr {} ", net(n))?,
                Match::Daddr(n) => write!(f, "ip daddr {} ", net(n))?,
                Match::DaddrNot(n) => write!(f, "ip daddr != {} ", net(n))?,
                Match::DaddrIn(s) => write!(f, "ip daddr @{s} ")?,
                Match::Dport(p, Some(port)) => write!(f, "{p} dport {port} ")?,
                Match::Dport(p, None) => write!(f, "meta l4proto {p} ")?,
                Match::Icmp => write!(f, "meta l4proto icmp ")?,
                Match::EstablishedOrRelated => write!(f, "ct state established,related ")?,
                Match::Invalid => write!(f, "ct state invalid ")?,
                Match::Dnatted => write!(f, "ct status dnat ")?,
            }
        }
        match &self.verdict {
            Verdict::Accept => write!(f, "accept"),
            Verdict::Drop => write!(f, "counter drop"),
            Verdict::Snat(a) => write!(f, "snat to {a}"),
            Verdict::Dnat(a, p) => write!(f, "dnat to {a}:{p}"),
        }
    }
}

/// A network as nft prints it: a single address without `/32`.
fn net(n: &Ipv4Net) -> String {
    if n.prefix_len() == 32 {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}
