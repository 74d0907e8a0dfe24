//! Kernel settings a gateway needs, written through /proc/sys from a thread inside the
//! namespace they belong to (/proc/sys/net shows the namespace of the thread that opens it).

use std::io;

use crate::netlink::{NetlinkError, Netns};

/// Why a setting could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// The namespace could not be entered.
    #[error("entering the namespace")]
    Netns(#[from] NetlinkError),
    /// The file could not be read or written.
    #[error("writing {value} to /proc/sys/{key} in netns {netns} (is /proc/sys read-only, e.g. systemd's ProtectKernelTunables?)")]
    Write {
        /// The key, as a path under /proc/sys.
        key: String,
        /// The value.
        value: String,
        /// The namespace.
        netns: String,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

/// Sets each `(key, value)` (keys as paths under /proc/sys) in `netns`, writing only those
/// that differ: writing `ip_forward` resets other settings of every interface, even to the
/// same value. Returns the keys it changed.
pub async fn ensure(netns: &Netns, settings: &[(String, &'static str)]) -> Result<Vec<String>, SysctlError> {
    let settings = settings.to_vec();
    let label = netns.label();
    netns
        .run_inside(move || {
            let mut changed = Vec::new();
            for (key, value) in settings {
                let path = format!("/proc/sys/{key}");
                let current = std::fs::read_to_string(&path).unwrap_or_default();
                if current.trim() == value {
                    continue;
                }
                std::fs::write(&path, value).map_err(|source| SysctlError::Write {
                    key: key.clone(),
                    value: value.to_owned(),
                    netns: label.clone(),
                    source,
                })?;
                changed.push(key);
            }
            Ok(changed)
        })
        .await?
}
