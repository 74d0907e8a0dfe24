//! br-tun's flows kept per tenant between passes, so that a pass costs what changed, not the
//! cluster: a plug on this host or a container elsewhere changes one tenant's input, and only
//! that tenant's flows are computed again and compared.
//!
//! Without a cookie clash the flows and cookies are exactly those of [`tun_flows`]: each spec's
//! cookie is its own hash, whichever group computed it. Two groups hashing two specs to one
//! cookie (48 bits of hash: not expected in the life of a cluster) is reported by
//! [`TunGroups::clash`], and the caller falls back to [`tun_flows`], which salts.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::{tables, tenant_flows, with_cookies, Entry, FlowSpec, PipelineInput, TenantInput};

/// What one group's flows are computed from: equal inputs, equal flows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GroupInput {
    /// The flows of no tenant (table defaults, the patch port).
    Base { patch: Option<u32> },
    /// One tenant's, once its tunnel port and the patch port have ofports.
    Tenant { input: Arc<TenantInput>, tunnel_port: u32, patch: u32 },
}

impl GroupInput {
    /// Equal inputs; a tenant's input the caller kept from the last pass is not compared.
    fn same(&self, other: &GroupInput) -> bool {
        match (self, other) {
            (
                GroupInput::Tenant { input: a, tunnel_port: ta, patch: pa },
                GroupInput::Tenant { input: b, tunnel_port: tb, patch: pb },
            ) => ta == tb && pa == pb && (Arc::ptr_eq(a, b) || a == b),
            (a, b) => a == b,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum GroupKey {
    Base,
    Tenant(String),
}

#[derive(Debug)]
struct Group {
    input: GroupInput,
    /// Sorted by cookie.
    entries: Vec<Entry>,
    /// How many of them concern each VLAN and each peer.
    counts: Counts,
}

/// Flows per tenant VLAN and per peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Counts {
    by_vlan: BTreeMap<u16, usize>,
    by_peer: BTreeMap<IpAddr, usize>,
}

impl Counts {
    fn of(entries: &[Entry]) -> Counts {
        let mut c = Counts::default();
        for e in entries {
            if let Some(v) = e.spec.vlan() {
                *c.by_vlan.entry(v).or_default() += 1;
            }
            if let Some(p) = e.spec.peer() {
                *c.by_peer.entry(p).or_default() += 1;
            }
        }
        c
    }

    fn add(&mut self, other: &Counts) {
        for (v, n) in &other.by_vlan {
            *self.by_vlan.entry(*v).or_default() += n;
        }
        for (p, n) in &other.by_peer {
            *self.by_peer.entry(*p).or_default() += n;
        }
    }

    fn subtract(&mut self, other: &Counts) {
        fn sub<K: Ord + Copy>(map: &mut BTreeMap<K, usize>, k: K, n: usize) {
            if let Some(have) = map.get_mut(&k) {
                *have -= n.min(*have);
                if *have == 0 {
                    map.remove(&k);
                }
            }
        }
        for (v, n) in &other.by_vlan {
            sub(&mut self.by_vlan, *v, *n);
        }
        for (p, n) in &other.by_peer {
            sub(&mut self.by_peer, *p, *n);
        }
    }
}

impl Group {
    fn compute(input: GroupInput) -> Group {
        let mut specs = Vec::new();
        match &input {
            GroupInput::Base { patch } => {
                specs.push(FlowSpec::Drop { table: tables::TUN_CLASSIFY });
                specs.push(FlowSpec::Drop { table: tables::TUN_FROM_INT });
                if let Some(patch) = *patch {
                    specs.push(FlowSpec::FromIntegration { patch });
                }
            }
            GroupInput::Tenant { input, tunnel_port, patch } => tenant_flows(&mut specs, input, *tunnel_port, *patch),
        }
        let entries = with_cookies(specs);
        Group { input, counts: Counts::of(&entries), entries }
    }
}

/// br-tun's desired flows, by group (the table defaults, then one group per tenant). Cloning
/// shares the groups.
#[derive(Debug, Clone, Default)]
pub struct TunGroups {
    groups: BTreeMap<GroupKey, Arc<Group>>,
    /// Every group's counts added up, kept as groups change.
    counts: Arc<Counts>,
}

impl TunGroups {
    /// The flows for `input`, reusing the groups of `prev` whose input has not changed.
    pub fn compute(input: &PipelineInput, prev: &TunGroups) -> TunGroups {
        let mut groups = BTreeMap::new();
        let mut put = |key: GroupKey, wanted: GroupInput| {
            let group = match prev.groups.get(&key) {
                Some(g) if g.input.same(&wanted) => g.clone(),
                _ => Arc::new(Group::compute(wanted)),
            };
            groups.insert(key, group);
        };
        put(GroupKey::Base, GroupInput::Base { patch: input.tun_patch });
        if let Some(patch) = input.tun_patch {
            for (name, t) in &input.tenants {
                let Some(tunnel_port) = t.tunnel_port else { continue };
                put(GroupKey::Tenant(name.clone()), GroupInput::Tenant { input: t.clone(), tunnel_port, patch });
            }
        }
        let (gone, came) = (only_in(&prev.groups, &groups), only_in(&groups, &prev.groups));
        let counts = if gone.is_empty() && came.is_empty() {
            prev.counts.clone()
        } else {
            let mut c = (*prev.counts).clone();
            gone.iter().for_each(|g| c.subtract(&g.counts));
            came.iter().for_each(|g| c.add(&g.counts));
            Arc::new(c)
        };
        TunGroups { groups, counts }
    }

    /// What to send so a bridge holding exactly `prev`'s flows holds these: the entries to add
    /// and the cookies to delete (sorted), compared group by group, the unchanged ones skipped.
    pub fn changes_since<'a>(&'a self, prev: &TunGroups) -> (Vec<&'a Entry>, Vec<u64>) {
        let (mut add, mut delete) = (Vec::new(), Vec::new());
        for (key, group) in &self.groups {
            match prev.groups.get(key) {
                Some(old) if Arc::ptr_eq(old, group) => {}
                Some(old) => {
                    let (a, d) = sorted_difference(&group.entries, &old.entries);
                    add.extend(a);
                    delete.extend(d);
                }
                None => add.extend(group.entries.iter()),
            }
        }
        for (key, old) in &prev.groups {
            if !self.groups.contains_key(key) {
                delete.extend(old.entries.iter().map(|e| e.cookie));
            }
        }
        // A flow in a group that went and in one that came (a tenant renamed, same VLAN and
        // ports) is in both lists: the bundle deletes before it adds, so it stays.
        delete.sort_unstable();
        (add, delete)
    }

    /// Every flow, sorted by cookie (as [`super::changes`] takes them).
    pub fn sorted(&self) -> Vec<&Entry> {
        let mut all: Vec<&Entry> = self.groups.values().flat_map(|g| g.entries.iter()).collect();
        all.sort_unstable_by_key(|e| e.cookie);
        all
    }

    /// Whether two groups hold one cookie: then these groups cannot be sent as they are (see
    /// the module's documentation).
    pub fn clash(&self) -> bool {
        let all = self.sorted();
        all.windows(2).any(|w| w[0].cookie == w[1].cookie)
    }

    /// Number of flows.
    pub fn len(&self) -> usize {
        self.groups.values().map(|g| g.entries.len()).sum()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many flows concern each tenant VLAN and each peer, for status (as
    /// [`super::DesiredFlows::counts`]).
    pub fn counts(&self) -> (BTreeMap<u16, usize>, BTreeMap<IpAddr, usize>) {
        (self.counts.by_vlan.clone(), self.counts.by_peer.clone())
    }
}

/// The groups of `a` that `b` does not share.
fn only_in<'a>(a: &'a BTreeMap<GroupKey, Arc<Group>>, b: &BTreeMap<GroupKey, Arc<Group>>) -> Vec<&'a Arc<Group>> {
    a.iter().filter(|(k, g)| !b.get(*k).is_some_and(|o| Arc::ptr_eq(o, g))).map(|(_, g)| g).collect()
}

/// Entries of `new` not in `old`, and cookies of `old` not in `new` (both sorted by cookie).
fn sorted_difference<'a>(new: &'a [Entry], old: &[Entry]) -> (Vec<&'a Entry>, Vec<u64>) {
    let (mut add, mut delete) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < new.len() || j < old.len() {
        match (new.get(i), old.get(j)) {
            (Some(n), Some(o)) if n.cookie == o.cookie => {
                i += 1;
                j += 1;
            }
            (Some(n), Some(o)) if n.cookie < o.cookie => {
                add.push(n);
                i += 1;
            }
            (Some(_), Some(o)) | (None, Some(o)) => {
                delete.push(o.cookie);
                j += 1;
            }
            (Some(n), None) => {
                add.push(n);
                i += 1;
            }
            (None, None) => unreachable!("the loop ends first"),
        }
    }
    (add, delete)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap, HashSet};
    use std::net::IpAddr;

    use super::*;
    use crate::pipeline::{changes, tun_flows, RemoteEndpoint};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn tenant(vlan: u16, tunnel_port: u32, peers: u8) -> TenantInput {
        let members: Vec<IpAddr> = (2..2 + peers).map(|h| ip(&format!("198.18.0.{h}"))).collect();
        let remote = members
            .iter()
            .enumerate()
            .map(|(i, host)| RemoteEndpoint {
                mac: format!("02:00:00:00:{vlan:02x}:{i:02x}").parse().unwrap(),
                ip: ip(&format!("198.19.{vlan}.{}", 10 + i)),
                host: *host,
            })
            .collect();
        TenantInput {
            vlan,
            tunnel_port: Some(tunnel_port),
            members,
            remote,
            local: vec![ip(&format!("198.19.{vlan}.2"))],
            gateway: ip(&format!("198.19.{vlan}.1")),
            gateway_mac: None,
        }
    }

    fn input(tenants: &[(&str, TenantInput)]) -> PipelineInput {
        PipelineInput {
            tun_patch: Some(1),
            tenants: tenants.iter().map(|(n, t)| ((*n).to_owned(), Arc::new(t.clone()))).collect(),
            ports: vec![],
            gateway_ports: vec![],
        }
    }

    fn cookies(entries: &[&Entry]) -> BTreeMap<u64, FlowSpec> {
        entries.iter().map(|e| (e.cookie, e.spec.clone())).collect()
    }

    #[test]
    fn groups_hold_exactly_the_flows_and_cookies_of_the_whole_pipeline() {
        let i = input(&[("red", tenant(1, 10, 3)), ("blue", tenant(2, 11, 2))]);
        let g = TunGroups::compute(&i, &TunGroups::default());
        let whole = tun_flows(&i);
        assert_eq!(cookies(&g.sorted()), cookies(&whole.iter().collect::<Vec<_>>()));
        assert_eq!(g.len(), whole.len());
        assert_eq!(g.counts(), crate::pipeline::DesiredFlows { tun: whole, int: vec![] }.counts());
        assert!(!g.clash());
    }

    /// Every step of a sequence of inputs: the group-wise changes equal the changes of the
    /// whole pipeline against a switch holding the previous flows.
    #[test]
    fn changes_since_equals_the_full_comparison_step_by_step() {
        let red = tenant(1, 10, 3);
        let mut red_plus_one = tenant(1, 10, 4);
        red_plus_one.local.push(ip("198.19.1.3"));
        let mut red_moved_port = red.clone();
        red_moved_port.tunnel_port = Some(12);
        let no_port = TenantInput { tunnel_port: None, ..tenant(3, 13, 1) };
        let steps = [
            input(&[]),
            input(&[("red", red.clone())]),
            input(&[("red", red.clone()), ("blue", tenant(2, 11, 2))]),
            input(&[("red", red_plus_one.clone()), ("blue", tenant(2, 11, 2))]),
            input(&[("red", red_moved_port), ("blue", tenant(2, 11, 2)), ("green", no_port)]),
            input(&[("blue", tenant(2, 11, 2))]),
            // Renamed: same VLAN, ports and members under another name.
            input(&[("azure", tenant(2, 11, 2))]),
            PipelineInput { tun_patch: Some(7), ..input(&[("azure", tenant(2, 11, 2))]) },
            PipelineInput { tun_patch: None, ..input(&[("azure", tenant(2, 11, 2))]) },
            input(&[]),
        ];
        let mut prev = TunGroups::default();
        let mut held: HashMap<u64, ()> = HashMap::new();
        for (n, step) in steps.iter().enumerate() {
            let next = TunGroups::compute(step, &prev);
            let (add, delete) = next.changes_since(&prev);
            let whole = tun_flows(step);
            let (want_add, want_delete) = changes(&whole, &held);
            // A flow deleted and added again in one bundle stays: compare what the switch ends
            // up holding, and that nothing that stays is sent needlessly except such a move.
            let mut after: HashSet<u64> = held.keys().copied().collect();
            for c in &delete {
                assert!(after.remove(c), "step {n}: deletes a cookie the switch does not hold");
            }
            after.extend(add.iter().map(|e| e.cookie));
            let want_after: HashSet<u64> = whole.iter().map(|e| e.cookie).collect();
            assert_eq!(after, want_after, "step {n}: the switch ends up with the pipeline's flows");
            let moved: HashSet<u64> = delete.iter().copied().filter(|c| add.iter().any(|e| e.cookie == *c)).collect();
            assert_eq!(add.len() - moved.len(), want_add.len(), "step {n}: adds");
            assert_eq!(delete.len() - moved.len(), want_delete.len(), "step {n}: deletes");
            held = whole.iter().map(|e| (e.cookie, ())).collect();
            prev = next;
        }
    }

    #[test]
    fn an_unchanged_tenant_is_neither_computed_nor_compared_again() {
        let before = input(&[("red", tenant(1, 10, 3)), ("blue", tenant(2, 11, 2))]);
        let prev = TunGroups::compute(&before, &TunGroups::default());
        let mut after = before.clone();
        Arc::make_mut(after.tenants.get_mut("red").unwrap()).local.push(ip("198.19.1.3"));
        let next = TunGroups::compute(&after, &prev);
        let key = GroupKey::Tenant("blue".to_owned());
        assert!(Arc::ptr_eq(&prev.groups[&key], &next.groups[&key]), "blue's group is shared, not recomputed");
        let (add, delete) = next.changes_since(&prev);
        assert_eq!(add.len(), 1, "one local address: one flow keeping its ARP home");
        assert!(delete.is_empty());
        assert!(matches!(add[0].spec, FlowSpec::ArpLocal { vlan: 1, .. }));
        assert_eq!(next.changes_since(&next), (vec![], vec![]), "nothing against itself");
    }
}
