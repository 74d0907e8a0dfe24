//! nf_tables netlink messages for a [`Table`]: the batch that replaces the agent's table in
//! one transaction, the one that deletes it, and the request that reads its comment back.
//! Constants are those of `linux/netfilter/nf_tables.h` and `nfnetlink.h`; the expression
//! layouts are the ones `nft --debug=netlink` shows for the same rules.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use overlay::gateway::ruleset::{Chain, Match, Rule, Set, Table, Verdict};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
pub(super) const NFT_MSG_NEWTABLE: u8 = 0;
const NFT_MSG_GETTABLE: u8 = 1;
const NFT_MSG_DELTABLE: u8 = 2;
const NFT_MSG_NEWCHAIN: u8 = 3;
const NFT_MSG_NEWRULE: u8 = 6;
const NFT_MSG_NEWSET: u8 = 9;
const NFT_MSG_NEWSETELEM: u8 = 12;

pub(super) const NLM_F_REQUEST: u16 = 0x1;
pub(super) const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;

/// `NFPROTO_IPV4`: the family of the agent's tables.
const NFPROTO_IPV4: u8 = 2;

const NLA_F_NESTED: u16 = 0x8000;

const NFTA_TABLE_NAME: u16 = 1;
pub(super) const NFTA_TABLE_USERDATA: u16 = 6;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_SET_ELEM_KEY: u16 = 1;

/// nft's data type number of `ipv4_addr`, so `nft list` prints set elements as addresses.
const TYPE_IPV4_ADDR: u32 = 7;

const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;
const REG_2: u32 = 2;
const PAYLOAD_NETWORK: u32 = 1;
const PAYLOAD_TRANSPORT: u32 = 2;
const META_IIFNAME: u32 = 6;
const META_OIFNAME: u32 = 7;
const META_L4PROTO: u32 = 16;
const CT_STATE: u32 = 0;
const CT_STATUS: u32 = 2;
const CMP_EQ: u32 = 0;
const CMP_NEQ: u32 = 1;
const NAT_SNAT: u32 = 0;
const NAT_DNAT: u32 = 1;
const NAT_RANGE_PROTO_SPECIFIED: u32 = 2;
/// `NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED)`.
const CT_STATE_ESTABLISHED_RELATED: u32 = 0x2 | 0x4;
const CT_STATE_INVALID: u32 = 0x1;
/// `IPS_DST_NAT`.
const CT_STATUS_DNAT: u32 = 0x20;
/// `IFNAMSIZ`: interface names are compared as 16 bytes, NUL-padded.
const IFNAMSIZ: usize = 16;

/// The table's comment: what marks it as the agent's and says which content it holds.
pub fn comment(fingerprint: u64) -> String {
    format!("overlay-agent {fingerprint:016x}")
}

/// The fingerprint in a comment written by [`comment`].
pub fn fingerprint_of(comment: &str) -> Option<u64> {
    let hex = comment.strip_prefix("overlay-agent ")?;
    (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok()).flatten()
}

/// An attribute being built: type, then its payload.
struct Attrs(Vec<u8>);

impl Attrs {
    fn new() -> Attrs {
        Attrs(Vec::with_capacity(64))
    }

    fn bytes(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = 4 + value.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }

    fn string(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.bytes(kind, &v)
    }

    fn u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.bytes(kind, &v.to_be_bytes())
    }

    fn nested(&mut self, kind: u16, inner: &Attrs) -> &mut Self {
        self.bytes(kind | NLA_F_NESTED, &inner.0)
    }

    /// `NFTA_DATA_VALUE` inside a nested `kind`.
    fn data(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let mut d = Attrs::new();
        d.bytes(NFTA_DATA_VALUE, value);
        self.nested(kind, &d)
    }
}

/// Messages of one batch, with the sequence numbers of those the kernel acknowledges.
pub struct Batch {
    /// The encoded batch.
    pub bytes: Vec<u8>,
    /// (sequence number, what the message does) of every acknowledged message.
    pub acked: Vec<(u32, String)>,
    next_seq: u32,
}

impl Batch {
    fn new(first_seq: u32) -> Batch {
        let mut b = Batch { bytes: Vec::with_capacity(4096), acked: Vec::new(), next_seq: first_seq };
        b.raw(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES, &[]);
        b
    }

    /// One netlink message: header, nfgenmsg, attributes.
    fn raw(&mut self, kind: u16, flags: u16, family: u8, res_id: u16, attrs: &[u8]) -> u32 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let len = 16 + 4 + attrs.len();
        self.bytes.extend_from_slice(&(len as u32).to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(&flags.to_ne_bytes());
        self.bytes.extend_from_slice(&seq.to_ne_bytes());
        self.bytes.extend_from_slice(&0u32.to_ne_bytes());
        self.bytes.extend_from_slice(&[family, 0]);
        self.bytes.extend_from_slice(&res_id.to_be_bytes());
        self.bytes.extend_from_slice(attrs);
        seq
    }

    fn message(&mut self, msg: u8, flags: u16, attrs: &Attrs, what: String) {
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | u16::from(msg);
        let seq = self.raw(kind, NLM_F_REQUEST | NLM_F_ACK | flags, NFPROTO_IPV4, 0, &attrs.0);
        self.acked.push((seq, what));
    }

    fn end(mut self) -> Batch {
        self.raw(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES, &[]);
        self
    }

    /// Creates the table if it is missing (so that deleting it next never fails), then
    /// deletes it: everything in it goes.
    fn clear(&mut self, name: &str) {
        let mut a = Attrs::new();
        a.string(NFTA_TABLE_NAME, name);
        self.message(NFT_MSG_NEWTABLE, NLM_F_CREATE, &a, format!("making sure table {name} exists"));
        self.message(NFT_MSG_DELTABLE, 0, &a, format!("deleting table {name}"));
    }
}

/// The batch that makes the namespace hold exactly `table`, in one transaction: the old table
/// and everything in it go and the new one comes, or nothing changes. Connections keep the
/// translations conntrack recorded for them.
pub fn replace(table: &Table, first_seq: u32) -> Batch {
    let mut b = Batch::new(first_seq);
    b.clear(&table.name);
    let mut t = Attrs::new();
    t.string(NFTA_TABLE_NAME, &table.name);
    // The comment in the TLV form nft reads back (NFTNL_UDATA_TABLE_COMMENT = 0).
    let text = comment(table.fingerprint());
    let mut udata = vec![0u8, (text.len() + 1) as u8];
    udata.extend_from_slice(text.as_bytes());
    udata.push(0);
    t.bytes(NFTA_TABLE_USERDATA, &udata);
    b.message(NFT_MSG_NEWTABLE, NLM_F_CREATE, &t, format!("creating table {}", table.name));
    for (i, s) in table.sets.iter().enumerate() {
        set(&mut b, &table.name, s, i as u32 + 1);
    }
    for c in &table.chains {
        chain(&mut b, &table.name, c);
    }
    for c in &table.chains {
        for (i, r) in c.rules.iter().enumerate() {
            let set_id = |name: &str| table.sets.iter().position(|s| s.name == name).map(|i| i as u32 + 1);
            rule(&mut b, &table.name, &c.name, r, set_id, format!("rule {} of chain {} ({r})", i + 1, c.name));
        }
    }
    b.end()
}

/// The batch that removes the agent's table `name` (and nothing if it is not there).
pub fn delete(name: &str, first_seq: u32) -> Batch {
    let mut b = Batch::new(first_seq);
    b.clear(name);
    b.end()
}

/// The request for table `name` (answered by a `NEWTABLE` message, or `ENOENT`).
pub fn get_table(name: &str, seq: u32) -> Vec<u8> {
    let mut b = Batch { bytes: Vec::new(), acked: Vec::new(), next_seq: seq };
    let mut a = Attrs::new();
    a.string(NFTA_TABLE_NAME, name);
    let kind = (NFNL_SUBSYS_NFTABLES << 8) | u16::from(NFT_MSG_GETTABLE);
    b.raw(kind, NLM_F_REQUEST | NLM_F_ACK, NFPROTO_IPV4, 0, &a.0);
    b.bytes
}

fn set(b: &mut Batch, table: &str, s: &Set, id: u32) {
    let mut a = Attrs::new();
    a.string(NFTA_SET_TABLE, table)
        .string(NFTA_SET_NAME, &s.name)
        .u32(NFTA_SET_KEY_TYPE, TYPE_IPV4_ADDR)
        .u32(NFTA_SET_KEY_LEN, 4)
        .u32(NFTA_SET_ID, id);
    b.message(NFT_MSG_NEWSET, NLM_F_CREATE, &a, format!("creating set {}", s.name));
    if s.elements.is_empty() {
        return;
    }
    let mut list = Attrs::new();
    for e in &s.elements {
        let mut elem = Attrs::new();
        elem.data(NFTA_SET_ELEM_KEY, &e.octets());
        list.nested(NFTA_LIST_ELEM, &elem);
    }
    let mut a = Attrs::new();
    a.string(NFTA_SET_ELEM_LIST_TABLE, table)
        .string(NFTA_SET_ELEM_LIST_SET, &s.name)
        .u32(NFTA_SET_ELEM_LIST_SET_ID, id)
        .nested(NFTA_SET_ELEM_LIST_ELEMENTS, &list);
    b.message(NFT_MSG_NEWSETELEM, NLM_F_CREATE, &a, format!("filling set {}", s.name));
}

fn chain(b: &mut Batch, table: &str, c: &Chain) {
    let mut hook = Attrs::new();
    hook.u32(NFTA_HOOK_HOOKNUM, c.hook.number()).u32(NFTA_HOOK_PRIORITY, c.priority as u32);
    let mut a = Attrs::new();
    a.string(NFTA_CHAIN_TABLE, table)
        .string(NFTA_CHAIN_NAME, &c.name)
        .nested(NFTA_CHAIN_HOOK, &hook)
        .u32(NFTA_CHAIN_POLICY, if c.drop_by_default { NF_DROP } else { NF_ACCEPT })
        .string(NFTA_CHAIN_TYPE, c.kind.as_str());
    b.message(NFT_MSG_NEWCHAIN, NLM_F_CREATE, &a, format!("creating chain {}", c.name));
}

/// Expressions of one rule, each a list element `{name, data}`.
struct Exprs(Attrs);

impl Exprs {
    fn push(&mut self, name: &str, data: &Attrs) {
        let mut e = Attrs::new();
        e.string(NFTA_EXPR_NAME, name).nested(NFTA_EXPR_DATA, data);
        self.0.nested(NFTA_LIST_ELEM, &e);
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32) {
        let mut d = Attrs::new();
        d.u32(1, REG_1).u32(2, base).u32(3, offset).u32(4, len);
        self.push("payload", &d);
    }

    fn meta(&mut self, key: u32) {
        let mut d = Attrs::new();
        d.u32(1, REG_1).u32(2, key);
        self.push("meta", &d);
    }

    fn ct(&mut self, key: u32) {
        let mut d = Attrs::new();
        d.u32(1, REG_1).u32(2, key);
        self.push("ct", &d);
    }

    fn cmp(&mut self, op: u32, value: &[u8]) {
        let mut d = Attrs::new();
        d.u32(1, REG_1).u32(2, op).data(3, value);
        self.push("cmp", &d);
    }

    fn bitwise(&mut self, mask: &[u8]) {
        let mut d = Attrs::new();
        d.u32(1, REG_1).u32(2, REG_1).u32(3, mask.len() as u32).data(4, mask).data(5, &vec![0; mask.len()]);
        self.push("bitwise", &d);
    }

    fn immediate(&mut self, reg: u32, value: &[u8]) {
        let mut d = Attrs::new();
        d.u32(1, reg).data(2, value);
        self.push("immediate", &d);
    }

    fn verdict(&mut self, code: u32) {
        let mut v = Attrs::new();
        v.u32(NFTA_VERDICT_CODE, code);
        let mut data = Attrs::new();
        data.nested(NFTA_DATA_VERDICT, &v);
        let mut d = Attrs::new();
        d.u32(1, REG_VERDICT).nested(2, &data);
        self.push("immediate", &d);
    }

    /// An address field (`offset` 12: source, 16: destination) compared with a network.
    fn addr(&mut self, offset: u32, net: &Ipv4Net, op: u32) {
        self.payload(PAYLOAD_NETWORK, offset, 4);
        if net.prefix_len() < 32 {
            self.bitwise(&net.netmask().octets());
        }
        self.cmp(op, &net.network().octets());
    }

    fn ifname(&mut self, key: u32, name: &str) {
        self.meta(key);
        let mut v = [0u8; IFNAMSIZ];
        let n = name.len().min(IFNAMSIZ - 1);
        v[..n].copy_from_slice(&name.as_bytes()[..n]);
        self.cmp(CMP_EQ, &v);
    }

    /// A conntrack key (host byte order) with any of `bits` set.
    fn ct_bits(&mut self, key: u32, bits: u32) {
        self.ct(key);
        self.bitwise(&bits.to_ne_bytes());
        self.cmp(CMP_NEQ, &0u32.to_ne_bytes());
    }

    fn nat(&mut self, kind: u32, addr: Ipv4Addr, port: Option<u16>) {
        self.immediate(REG_1, &addr.octets());
        let mut d = Attrs::new();
        d.u32(1, kind).u32(2, u32::from(NFPROTO_IPV4)).u32(3, REG_1);
        if let Some(p) = port {
            self.immediate(REG_2, &p.to_be_bytes());
            d.u32(5, REG_2).u32(7, NAT_RANGE_PROTO_SPECIFIED);
        }
        self.push("nat", &d);
    }
}

fn rule(b: &mut Batch, table: &str, chain: &str, r: &Rule, set_id: impl Fn(&str) -> Option<u32>, what: String) {
    let mut x = Exprs(Attrs::new());
    for m in &r.matches {
        match m {
            Match::Iif(name) => x.ifname(META_IIFNAME, name),
            Match::Oif(name) => x.ifname(META_OIFNAME, name),
            Match::Saddr(n) => x.addr(12, n, CMP_EQ),
            Match::Daddr(n) => x.addr(16, n, CMP_EQ),
            Match::DaddrNot(n) => x.addr(16, n, CMP_NEQ),
            Match::DaddrIn(set) => {
                x.payload(PAYLOAD_NETWORK, 16, 4);
                let mut d = Attrs::new();
                d.string(1, set).u32(2, REG_1);
                if let Some(id) = set_id(set) {
                    d.u32(4, id);
                }
                x.push("lookup", &d);
            }
            Match::Dport(p, port) => {
                x.meta(META_L4PROTO);
                x.cmp(CMP_EQ, &[p.number()]);
                if let Some(port) = port {
                    x.payload(PAYLOAD_TRANSPORT, 2, 2);
                    x.cmp(CMP_EQ, &port.to_be_bytes());
                }
            }
            Match::Icmp => {
                x.meta(META_L4PROTO);
                x.cmp(CMP_EQ, &[1]);
            }
            Match::EstablishedOrRelated => x.ct_bits(CT_STATE, CT_STATE_ESTABLISHED_RELATED),
            Match::Invalid => x.ct_bits(CT_STATE, CT_STATE_INVALID),
            Match::Dnatted => x.ct_bits(CT_STATUS, CT_STATUS_DNAT),
        }
    }
    match &r.verdict {
        Verdict::Accept => x.verdict(NF_ACCEPT),
        Verdict::Drop => {
            let mut d = Attrs::new();
            d.bytes(1, &0u64.to_be_bytes()).bytes(2, &0u64.to_be_bytes());
            x.push("counter", &d);
            x.verdict(NF_DROP);
        }
        Verdict::Snat(a) => x.nat(NAT_SNAT, *a, None),
        Verdict::Dnat(a, p) => x.nat(NAT_DNAT, *a, Some(*p)),
    }
    let mut a = Attrs::new();
    a.string(NFTA_RULE_TABLE, table).string(NFTA_RULE_CHAIN, chain).nested(NFTA_RULE_EXPRESSIONS, &x.0);
    b.message(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, &a, what);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested_ones_flagged() {
        let mut a = Attrs::new();
        a.string(1, "up0");
        assert_eq!(a.0, [8, 0, 1, 0, b'u', b'p', b'0', 0]);
        let mut b = Attrs::new();
        b.bytes(2, &[1]);
        assert_eq!(b.0, [5, 0, 2, 0, 1, 0, 0, 0], "length counts the value, padding does not");
        let mut n = Attrs::new();
        n.nested(3, &b);
        assert_eq!(&n.0[..4], &[12, 0, 3, 0x80]);
    }

    #[test]
    fn a_batch_is_framed_by_begin_and_end_and_every_command_is_acked() {
        let b = delete("overlay_agent", 100);
        // begin, newtable, deltable, end
        let mut offset = 0;
        let mut kinds = Vec::new();
        while offset < b.bytes.len() {
            let len = u32::from_ne_bytes(b.bytes[offset..offset + 4].try_into().unwrap()) as usize;
            kinds.push(u16::from_ne_bytes(b.bytes[offset + 4..offset + 6].try_into().unwrap()));
            offset += len;
        }
        assert_eq!(kinds, [0x10, 0x0a00, 0x0a02, 0x11]);
        assert_eq!(b.acked.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [101, 102]);
    }

    #[test]
    fn comments_carry_the_fingerprint() {
        assert_eq!(fingerprint_of(&comment(0xdead_beef)), Some(0xdead_beef));
        assert_eq!(fingerprint_of("overlay-agent xyz"), None);
        assert_eq!(fingerprint_of("someone else's"), None);
    }
}
