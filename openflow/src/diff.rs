//! The change set that turns the flows a switch holds into the flows wanted: what a reconciler
//! sends as one bundle.

use std::collections::HashMap;

use crate::flow_mod::{Flow, FlowMod};

/// The flow_mods that make `actual` (a dump, already restricted to the caller's cookie) equal
/// to `desired`: `delete_strict` for every key no longer wanted, then `add` for every flow
/// missing or different (an add replaces the flow with the same [`crate::FlowKey`], its cookie and
/// instructions included). Nothing when they are equal. Deletes come first so that a bundle
/// applied in order never holds both an old and a new flow of one key.
pub fn diff_flows<'a>(
    desired: impl IntoIterator<Item = &'a Flow>,
    actual: impl IntoIterator<Item = &'a Flow>,
) -> Vec<FlowMod> {
    // Keyed by reference: no match is cloned to compare (tens of thousands of flows).
    let key = |f: &'a Flow| (f.table, f.priority, &f.matching);
    let want: HashMap<_, &Flow> = desired.into_iter().map(|f| (key(f), f)).collect();
    let mut have: HashMap<_, &Flow> = HashMap::with_capacity(want.len());
    let mut deletes: Vec<&Flow> = Vec::new();
    for f in actual {
        if !want.contains_key(&key(f)) {
            deletes.push(f);
        }
        have.insert(key(f), f);
    }
    let mut adds: Vec<&Flow> = want.iter().filter(|(k, f)| have.get(*k) != Some(*f)).map(|(_, f)| *f).collect();
    adds.sort();
    deletes.sort();
    let mut mods: Vec<FlowMod> = deletes.into_iter().map(|f| FlowMod::delete_strict(&f.key())).collect();
    mods.extend(adds.into_iter().map(|f| FlowMod::add(f.clone())));
    mods
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, FlowModCommand, Match};

    fn flow(prio: u16, out: u32, cookie: u64) -> Flow {
        Flow::builder(0, prio)
            .cookie(cookie)
            .matching(Match::builder().in_port(u32::from(prio)).build().unwrap())
            .action(Action::output(out))
            .build()
            .unwrap()
    }

    #[test]
    fn adds_changes_and_deletes() {
        let desired = [flow(1, 1, 7), flow(2, 2, 7), flow(3, 3, 7)];
        let actual = [flow(1, 1, 7), flow(2, 9, 7), flow(4, 4, 7)];
        let mods = diff_flows(&desired, &actual);
        let got: Vec<(FlowModCommand, u16)> = mods.iter().map(|m| (m.command, m.flow.priority)).collect();
        assert_eq!(got, [(FlowModCommand::DeleteStrict, 4), (FlowModCommand::Add, 2), (FlowModCommand::Add, 3)]);
        assert!(diff_flows(&desired, &desired).is_empty());
        // A cookie change alone is a change.
        assert_eq!(diff_flows(&[flow(1, 1, 8)], &[flow(1, 1, 7)]).len(), 1);
    }
}
