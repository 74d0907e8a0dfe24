//! Machine identity: which machine holds a hostname, and what a starting agent may do about a
//! registration it finds under its name.
//!
//! Machines built from one image share OVS's `system-id` (and often `/etc/machine-id` and the
//! OVS database), so none of those can tell two machines apart. The agent generates an identity
//! of its own on first start and keeps it in its state directory, together with the facts it
//! was made on ([`MachineFacts`]). When those facts no longer hold, the state directory came
//! from another machine (a cloned image) and a new identity is made ([`check_identity`]).
//!
//! Identity alone cannot catch a clone whose facts were copied too, so the liveness key adds
//! what no image carries: the kernel's boot id and the agent's pid. A name whose holder is
//! alive is never taken over ([`decide_registration`]).
//!
//! Everything here is pure; the agent reads the files and etcd and acts on the decision.

use serde::{Deserialize, Serialize};

use crate::model::{HostRecord, Liveness};

/// What this installation is bound to. `None` where a fact cannot be read here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineFacts {
    /// `/etc/machine-id`.
    #[serde(default)]
    pub machine_id: Option<String>,
    /// The UUID of the local OVS database's root row (`Open_vSwitch` table): a new one for
    /// every `ovsdb-tool create`.
    #[serde(default)]
    pub ovs_db_uuid: Option<String>,
    /// The firmware's machine UUID (`/sys/class/dmi/id/product_uuid`): distinct for every VM a
    /// hypervisor defines, even from one image.
    #[serde(default)]
    pub product_uuid: Option<String>,
}

impl MachineFacts {
    /// The facts that differ between `self` (recorded) and `now`. A fact unknown on either side
    /// proves nothing and is not compared.
    pub fn changed(&self, now: &MachineFacts) -> Vec<&'static str> {
        let pairs = [
            ("machine-id", &self.machine_id, &now.machine_id),
            ("OVS database", &self.ovs_db_uuid, &now.ovs_db_uuid),
            ("product uuid", &self.product_uuid, &now.product_uuid),
        ];
        pairs.into_iter().filter(|(_, a, b)| matches!((a, b), (Some(a), Some(b)) if a != b)).map(|(n, ..)| n).collect()
    }

    /// `self` with every fact `now` knows and `self` did not (a fact that became readable).
    pub fn completed_by(&self, now: &MachineFacts) -> MachineFacts {
        MachineFacts {
            machine_id: self.machine_id.clone().or_else(|| now.machine_id.clone()),
            ovs_db_uuid: self.ovs_db_uuid.clone().or_else(|| now.ovs_db_uuid.clone()),
            product_uuid: self.product_uuid.clone().or_else(|| now.product_uuid.clone()),
        }
    }
}

/// The identity file in the agent's state directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredIdentity {
    /// The machine identity (a random UUID).
    pub id: String,
    /// What it was made on.
    pub bound_to: MachineFacts,
}

/// What to do with the identity file found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityCheck {
    /// Keep it (store `bound_to` back if it learnt a fact).
    Keep {
        /// The facts to keep it bound to.
        bound_to: MachineFacts,
    },
    /// None yet: make one.
    FirstStart,
    /// It was made on another machine (the state directory was copied with an image): make a
    /// new one. `changed` names the facts that differ.
    Cloned {
        /// Which facts differ.
        changed: Vec<&'static str>,
    },
}

/// Checks the stored identity against the facts of this machine now.
pub fn check_identity(stored: Option<&StoredIdentity>, now: &MachineFacts) -> IdentityCheck {
    let Some(stored) = stored else { return IdentityCheck::FirstStart };
    let changed = stored.bound_to.changed(now);
    if changed.is_empty() {
        IdentityCheck::Keep { bound_to: stored.bound_to.completed_by(now) }
    } else {
        IdentityCheck::Cloned { changed }
    }
}

/// The starting agent: its record and what its liveness key will say.
#[derive(Debug, Clone)]
pub struct Claimant<'a> {
    /// The record it wants under its hostname.
    pub record: &'a HostRecord,
    /// This boot's id.
    pub boot_id: &'a str,
    /// The operator's explicit permission to replace a dead machine: its machine identity.
    pub take_over: Option<&'a str>,
}

/// What a starting agent finds under its hostname in etcd.
#[derive(Debug, Clone)]
pub struct Found {
    /// The host record (valid or not: `None` for a malformed value).
    pub record: Option<HostRecord>,
    /// The liveness key's value when the key exists: `Some(None)` for a key whose value says
    /// nothing (older agents write an empty value).
    pub liveness: Option<Option<Liveness>>,
}

/// What [`decide_registration`] allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// Nothing there (or only garbage): register afresh.
    Fresh,
    /// This machine's own registration: re-attach to it (same lease, peers see no change).
    Reattach,
    /// A registration of this machine by an agent before machine ids (same OVS `system-id`,
    /// its agent gone): adopt it, as the upgraded agent of that machine.
    Adopt,
    /// The operator named the dead holder's identity: replace it.
    TakeOver {
        /// The machine replaced.
        previous: HostRecord,
    },
    /// This machine's identity is alive elsewhere, or its last agent on another boot: wait a
    /// liveness TTL for that key to go. If it is still held after that, the other holder is a
    /// running clone: refuse with [`Registration::Refuse`] built from `if_still_held`.
    WaitForLiveness {
        /// The refusal to give if the key outlives the wait.
        if_still_held: Conflict,
    },
    /// Someone else holds the name.
    Refuse(Conflict),
}

/// Why a hostname cannot be registered, with what the operator can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The hostname.
    pub hostname: String,
    /// The holder's machine identity (or OVS system-id for an older agent).
    pub holder: String,
    /// The holder's underlay address.
    pub holder_ip: std::net::IpAddr,
    /// Whether the holder's agent is running.
    pub alive: bool,
    /// Why this is a conflict, and what to do, in words.
    pub advice: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "hostname '{}' is held by machine {} (underlay {}, agent {}): {}",
            self.hostname,
            self.holder,
            self.holder_ip,
            if self.alive { "running" } else { "not running" },
            self.advice
        )
    }
}

/// Decides what an agent may do with the registration `found` under its name.
/// `predecessor_running(pid)` says whether a process of that pid runs the agent on this boot.
pub fn decide_registration(
    me: &Claimant<'_>,
    found: &Found,
    predecessor_running: impl Fn(u32) -> bool,
) -> Registration {
    let Some(holder) = &found.record else { return Registration::Fresh };
    let alive = found.liveness.is_some();
    let conflict = |advice: String| Conflict {
        hostname: holder.hostname.clone(),
        holder: if holder.machine_id.is_empty() { holder.system_id.clone() } else { holder.machine_id.clone() },
        holder_ip: holder.underlay_ip,
        alive,
        advice,
    };
    let mine = &me.record.machine_id;
    if holder.machine_id == *mine {
        return match found.liveness.as_ref().and_then(Option::as_ref) {
            None if alive => Registration::Refuse(conflict(
                "its liveness key does not say which machine holds it; wait for it to expire and start again".into(),
            )),
            None => Registration::Reattach,
            Some(l) if l.machine_id != *mine => Registration::Refuse(conflict(format!(
                "the agent alive under this name is machine {} at {}: stop it, or give this machine another --hostname",
                l.machine_id, l.underlay_ip
            ))),
            Some(l) if l.boot_id == me.boot_id && !predecessor_running(l.pid) => Registration::Reattach,
            Some(l) if l.boot_id == me.boot_id => Registration::Refuse(conflict(format!(
                "another agent of this machine runs as pid {}: stop it first",
                l.pid
            ))),
            Some(l) => Registration::WaitForLiveness {
                if_still_held: conflict(format!(
                    "a machine with this machine's identity is running at {} (another boot): this machine was \
                     cloned together with the agent's state directory. Delete the identity file in the \
                     state directory here and give this machine its own --hostname",
                    l.underlay_ip
                )),
            },
        };
    }
    let older_agent_here = holder.machine_id.is_empty() && holder.system_id == me.record.system_id;
    if alive && older_agent_here {
        // An agent from before machine ids, on this machine: killed just now (its liveness key
        // outlives it by a TTL) during an upgrade, or still running beside this one.
        return Registration::WaitForLiveness {
            if_still_held: conflict(
                "an agent of an older version holds this name from this machine (same OVS system-id): stop it first"
                    .into(),
            ),
        };
    }
    if alive {
        return Registration::Refuse(conflict(
            "a live host cannot be taken over. If this machine was cloned from that host's image or given its \
             config by mistake, give it its own --hostname"
                .into(),
        ));
    }
    if older_agent_here {
        return Registration::Adopt;
    }
    if !holder.machine_id.is_empty() && me.take_over == Some(holder.machine_id.as_str()) {
        return Registration::TakeOver { previous: holder.clone() };
    }
    Registration::Refuse(conflict(format!(
        "its agent is not running. If that machine is gone for good, start this one with --take-over {} to \
         replace it (its endpoints are removed, its subnets kept); otherwise give this machine its own --hostname",
        if holder.machine_id.is_empty() { "<machine id>" } else { holder.machine_id.as_str() }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(m: &str, db: &str, product: Option<&str>) -> MachineFacts {
        MachineFacts { machine_id: Some(m.into()), ovs_db_uuid: Some(db.into()), product_uuid: product.map(Into::into) }
    }

    #[test]
    fn an_identity_stays_on_its_machine_and_is_remade_on_a_clone() {
        assert_eq!(check_identity(None, &facts("a", "db", None)), IdentityCheck::FirstStart);
        let stored = StoredIdentity { id: "id-1".into(), bound_to: facts("a", "db", None) };
        // A fact that became readable is added, not taken as a change.
        assert_eq!(
            check_identity(Some(&stored), &facts("a", "db", Some("p"))),
            IdentityCheck::Keep { bound_to: facts("a", "db", Some("p")) }
        );
        let stored = StoredIdentity { id: "id-1".into(), bound_to: facts("a", "db", Some("p")) };
        // A fact that cannot be read now proves nothing.
        let unknown = MachineFacts { product_uuid: None, ..facts("a", "db", None) };
        assert!(matches!(check_identity(Some(&stored), &unknown), IdentityCheck::Keep { .. }));
        assert_eq!(
            check_identity(Some(&stored), &facts("a", "db", Some("q"))),
            IdentityCheck::Cloned { changed: vec!["product uuid"] }
        );
        assert_eq!(
            check_identity(Some(&stored), &facts("b", "db2", Some("p"))),
            IdentityCheck::Cloned { changed: vec!["machine-id", "OVS database"] }
        );
    }

    fn record(machine: &str, system: &str, ip: &str) -> HostRecord {
        HostRecord {
            hostname: "h1".into(),
            underlay_ip: ip.parse().unwrap(),
            system_id: system.into(),
            machine_id: machine.into(),
            tunnel_types: vec![],
            version: String::new(),
        }
    }

    fn live(machine: &str, boot: &str, pid: u32) -> Option<Option<Liveness>> {
        Some(Some(Liveness {
            machine_id: machine.into(),
            boot_id: boot.into(),
            pid,
            underlay_ip: "198.18.0.9".parse().unwrap(),
        }))
    }

    fn decide(me: &HostRecord, take_over: Option<&str>, found: Found) -> Registration {
        decide_registration(&Claimant { record: me, boot_id: "boot-1", take_over }, &found, |pid| pid == 7)
    }

    #[test]
    fn the_same_machine_reattaches_unless_its_other_agent_runs() {
        let me = record("m1", "sys", "198.18.0.1");
        let found = |liveness| Found { record: Some(record("m1", "sys", "198.18.0.1")), liveness };
        assert_eq!(decide(&me, None, found(None)), Registration::Reattach);
        // Killed -9 a moment ago: its key is still there, its pid is gone.
        assert_eq!(decide(&me, None, found(live("m1", "boot-1", 99))), Registration::Reattach);
        // Another agent process of this machine is running.
        assert!(matches!(decide(&me, None, found(live("m1", "boot-1", 7))), Registration::Refuse(c) if c.alive));
        // The same identity on another boot: a reboot quicker than the TTL, or a clone.
        assert!(matches!(decide(&me, None, found(live("m1", "boot-2", 7))), Registration::WaitForLiveness { .. }));
        assert!(matches!(decide(&me, None, found(Some(None))), Registration::Refuse(_)));
        assert_eq!(decide(&me, None, Found { record: None, liveness: None }), Registration::Fresh);
    }

    #[test]
    fn another_machine_is_refused_while_the_holder_lives_and_replaces_it_only_on_purpose() {
        let me = record("m2", "sys", "198.18.0.2");
        let holder = || Some(record("m1", "sys", "198.18.0.1"));
        let refused = decide(&me, Some("m1"), Found { record: holder(), liveness: live("m1", "boot-9", 1) });
        let Registration::Refuse(c) = refused else { panic!("{refused:?}") };
        assert_eq!((c.holder.as_str(), c.holder_ip.to_string().as_str(), c.alive), ("m1", "198.18.0.1", true));
        assert!(c.to_string().contains("cannot be taken over"), "{c}");
        // Dead holder: only with its identity named.
        let dead = || Found { record: holder(), liveness: None };
        let Registration::Refuse(c) = decide(&me, None, dead()) else { panic!() };
        assert!(c.to_string().contains("--take-over m1"), "{c}");
        assert!(matches!(decide(&me, Some("m3"), dead()), Registration::Refuse(_)));
        assert!(
            matches!(decide(&me, Some("m1"), dead()), Registration::TakeOver { previous } if previous.machine_id == "m1")
        );
    }

    #[test]
    fn a_record_of_an_older_agent_of_this_machine_is_adopted_once_that_agent_is_gone() {
        let me = record("m1", "sys-1", "198.18.0.1");
        let old = || Some(record("", "sys-1", "198.18.0.1"));
        assert_eq!(decide(&me, None, Found { record: old(), liveness: None }), Registration::Adopt);
        assert!(matches!(
            decide(&me, None, Found { record: old(), liveness: Some(None) }),
            Registration::WaitForLiveness { .. }
        ));
        let other = Some(record("", "sys-2", "198.18.0.3"));
        assert!(matches!(decide(&me, None, Found { record: other, liveness: None }), Registration::Refuse(_)));
    }
}
