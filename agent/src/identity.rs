//! This machine's identity on disk: made on first start, kept in the state directory, made anew
//! when the file turns out to come from another machine ([`overlay::identity`] decides).

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use overlay::identity::{check_identity, IdentityCheck, MachineFacts, StoredIdentity};

/// The identity file, in the state directory.
pub const FILE_NAME: &str = "identity.json";

/// Why the identity could not be loaded or stored.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The state directory cannot be used.
    #[error("cannot use the state directory {}: {source}; set state_dir (--state-dir) to a writable directory", path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The identity file cannot be read or written.
    #[error("cannot {what} the identity file {}: {source}", path.display())]
    File {
        /// Read or write.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// No random identity could be generated.
    #[error("cannot generate a machine identity: {0}")]
    Random(#[source] io::Error),
    /// The state directory is one that systemd empties whenever the agent stops.
    #[error(
        "state_dir {} is inside {}, the service's RuntimeDirectory, which systemd empties whenever the agent stops: \
         the machine identity kept there would be lost, and the next start refused this host's own name. \
         Set state_dir = \"/var/lib/overlay-agent\" (the unit's StateDirectory) in the config file \
         (`make install` does this for the default of earlier releases, /run/overlay-agent)",
        path.display(),
        runtime.display()
    )]
    Volatile {
        /// The state directory.
        path: PathBuf,
        /// The runtime directory holding it.
        runtime: PathBuf,
    },
}

/// The machine identity and how it came about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The identity.
    pub id: String,
    /// Whether it was made now, and why.
    pub made: Option<&'static str>,
}

/// What identifies this installation, as far as it can be read here.
pub fn facts(ovs_db_uuid: Option<String>) -> MachineFacts {
    let read = |p: &str| {
        std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty() && is_meaningful(s))
    };
    MachineFacts {
        machine_id: read("/etc/machine-id"),
        ovs_db_uuid,
        product_uuid: read("/sys/class/dmi/id/product_uuid"),
    }
}

/// Firmware without a UUID reports all zeros or all ones; those identify nothing.
fn is_meaningful(s: &str) -> bool {
    let hex: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    !hex.is_empty() && !hex.chars().all(|c| c == '0') && !hex.chars().all(|c| c.eq_ignore_ascii_case(&'f'))
}

/// Refuses a state directory inside one of `runtime_dirs`: the value of `$RUNTIME_DIRECTORY`,
/// which systemd sets (colon-separated) for a unit with `RuntimeDirectory=` and empties whenever
/// the unit stops. The identity must outlive the agent, or its next start is refused its own
/// hostname. Paths are compared as resolved (`/var/run` is `/run`), as far as they exist.
pub fn check_state_dir(state_dir: &Path, runtime_dirs: Option<&OsStr>) -> Result<(), IdentityError> {
    let Some(runtime_dirs) = runtime_dirs else { return Ok(()) };
    let state = resolved(state_dir);
    for runtime in std::env::split_paths(runtime_dirs).filter(|p| !p.as_os_str().is_empty()) {
        if state.starts_with(resolved(&runtime)) {
            return Err(IdentityError::Volatile { path: state_dir.to_path_buf(), runtime });
        }
    }
    Ok(())
}

/// `p` with symbolic links resolved in its longest existing ancestor.
fn resolved(p: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut existing = p;
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest.iter().rev().fold(real, |acc, part| acc.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// Loads the identity from `state_dir`, or makes one (first start, or a file copied from
/// another machine, which is kept beside as `identity.json.cloned` for the operator to see).
pub fn load_or_create(state_dir: &Path, now: &MachineFacts) -> Result<Identity, IdentityError> {
    std::fs::create_dir_all(state_dir)
        .map_err(|source| IdentityError::StateDir { path: state_dir.to_path_buf(), source })?;
    let path = state_dir.join(FILE_NAME);
    let stored: Option<StoredIdentity> = match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "identity file unreadable; making a new identity");
                None
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => return Err(IdentityError::File { what: "read", path, source }),
    };
    let (id, bound_to, made) = match check_identity(stored.as_ref(), now) {
        IdentityCheck::Keep { bound_to } => {
            let stored = stored.expect("kept identities were stored");
            let learnt = bound_to != stored.bound_to;
            if !learnt {
                return Ok(Identity { id: stored.id, made: None });
            }
            (stored.id, bound_to, None)
        }
        IdentityCheck::FirstStart => (new_id()?, now.clone(), Some("first start")),
        IdentityCheck::Cloned { changed } => {
            let aside = path.with_extension("json.cloned");
            let _ = std::fs::rename(&path, &aside);
            tracing::warn!(
                file = %path.display(), changed = ?changed, kept_as = %aside.display(),
                "the identity file was made on another machine (a cloned image?): this machine gets its own"
            );
            (new_id()?, now.clone(), Some("identity file from another machine"))
        }
    };
    store(&path, &StoredIdentity { id: id.clone(), bound_to })?;
    Ok(Identity { id, made })
}

fn store(path: &Path, identity: &StoredIdentity) -> Result<(), IdentityError> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(identity).expect("the identity serializes");
    std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path)).map_err(|source| IdentityError::File {
        what: "write",
        path: path.to_path_buf(),
        source,
    })
}

fn new_id() -> Result<String, IdentityError> {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid").map(|s| s.trim().to_owned()).map_err(IdentityError::Random)
}

/// This boot's id.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// Whether `pid` is a running overlay-agent (not this process) on this boot.
pub fn agent_running(pid: u32) -> bool {
    if pid == std::process::id() {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).next().is_some_and(|argv0| argv0.ends_with(b"overlay-agent")))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts_of(machine: &str, db: &str) -> MachineFacts {
        MachineFacts { machine_id: Some(machine.into()), ovs_db_uuid: Some(db.into()), product_uuid: None }
    }

    #[test]
    fn made_once_kept_after_and_remade_when_copied_to_another_machine() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path(), &facts_of("m", "db1")).unwrap();
        assert_eq!(first.made, Some("first start"));
        let again = load_or_create(dir.path(), &facts_of("m", "db1")).unwrap();
        assert_eq!((again.id.as_str(), again.made), (first.id.as_str(), None));
        // The same state directory on a machine with another OVS database: a clone.
        let clone = load_or_create(dir.path(), &facts_of("m", "db2")).unwrap();
        assert_ne!(clone.id, first.id);
        assert_eq!(clone.made, Some("identity file from another machine"));
        assert!(dir.path().join("identity.json.cloned").exists());
        assert_eq!(load_or_create(dir.path(), &facts_of("m", "db2")).unwrap().id, clone.id);
    }

    #[test]
    fn a_state_dir_that_cannot_be_made_says_which_setting_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let err = load_or_create(&file.join("sub"), &facts_of("m", "db")).unwrap_err();
        assert!(err.to_string().contains("--state-dir"), "{err}");
    }

    #[test]
    fn a_state_dir_inside_the_units_runtime_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("run/overlay-agent");
        std::fs::create_dir_all(&runtime).unwrap();
        std::os::unix::fs::symlink(dir.path().join("run"), dir.path().join("var-run")).unwrap();
        let both = std::env::join_paths([dir.path().join("other"), runtime.clone()]).unwrap();
        for (state, runtime_dirs) in [
            (runtime.clone(), runtime.as_os_str()),
            (runtime.join("state"), runtime.as_os_str()),
            (dir.path().join("var-run/overlay-agent"), runtime.as_os_str()),
            (runtime.clone(), both.as_os_str()),
        ] {
            let err = check_state_dir(&state, Some(runtime_dirs)).unwrap_err();
            assert!(matches!(err, IdentityError::Volatile { .. }), "{}: {err}", state.display());
            let text = err.to_string();
            assert!(text.contains(&state.display().to_string()) && text.contains("RuntimeDirectory"), "{text}");
            assert!(text.contains("state_dir = \"/var/lib/overlay-agent\""), "{text}");
        }
        let persistent = dir.path().join("var/lib/overlay-agent");
        check_state_dir(&persistent, Some(runtime.as_os_str())).unwrap();
        check_state_dir(&dir.path().join("run/overlay-agent-state"), Some(runtime.as_os_str())).unwrap();
        check_state_dir(&runtime, None).unwrap();
        check_state_dir(&runtime, Some(OsStr::new(""))).unwrap();
    }

    #[test]
    fn zero_uuids_identify_nothing() {
        assert!(!is_meaningful("00000000-0000-0000-0000-000000000000"));
        assert!(!is_meaningful("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"));
        assert!(is_meaningful("4c4c4544-0042-3510-8052-b4c04f4e4d32"));
    }

    #[test]
    fn this_process_is_not_its_own_predecessor() {
        assert!(!agent_running(std::process::id()));
        assert!(!agent_running(u32::MAX));
    }
}
