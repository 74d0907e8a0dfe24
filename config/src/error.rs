//! Configuration errors. Every message names the key and, where it can, where the value came
//! from, so an operator knows what to fix and where.

use std::fmt;
use std::path::PathBuf;

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag or its environment variable (clap merges the two, so they cannot be
    /// told apart afterwards).
    Flag {
        /// The flag, without the leading `--`.
        flag: &'static str,
        /// The environment variable.
        env: &'static str,
    },
    /// The config file at this path.
    File(PathBuf),
    /// The built-in default.
    Default,
    /// The machine's hostname (`/proc/sys/kernel/hostname` or `/etc/hostname`).
    SystemHostname,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag { flag, env } => write!(f, "from --{flag} or {env}"),
            Origin::File(p) => write!(f, "from {}", p.display()),
            Origin::Default => f.write_str("the default"),
            Origin::SystemHostname => f.write_str("the system hostname"),
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A config file named explicitly (`--config` / `OVERLAY_CONFIG`) does not exist.
    #[error("config file {} does not exist (given by --config or OVERLAY_CONFIG)", path.display())]
    NotFound {
        /// The file that was asked for.
        path: PathBuf,
    },
    /// The config file exists but could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong type.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem (0 when the parser gave no position).
        line: usize,
        /// 1-based column of the problem (0 when the parser gave no position).
        column: usize,
        /// The parser's message; for unknown keys it names the key and the valid ones.
        message: String,
    },
    /// A required key has no value anywhere.
    #[error("{key} is required: set {key} in {}, --{flag} or {env}", file.display())]
    Missing {
        /// Dotted file key.
        key: &'static str,
        /// The config file that was (or would have been) read.
        file: PathBuf,
        /// The flag, without `--`.
        flag: &'static str,
        /// The environment variable.
        env: &'static str,
    },
    /// A value is malformed or out of range.
    #[error("{key} '{value}' ({origin}) {problem}")]
    Invalid {
        /// Dotted file key, with an `[index]` for list items.
        key: String,
        /// The offending value.
        value: String,
        /// Where the value came from.
        origin: Origin,
        /// What is wrong and how to fix it, e.g. "is invalid: use system or netdev".
        problem: String,
    },
    /// One key of a pair that only works together is set without the other.
    #[error(
        "{key} is set ({origin}) but {partner} is not: the two go together; \
         set {partner} in {}, {}",
        file.display(),
        crate::keys::flag_and_env(partner)
    )]
    Unpaired {
        /// The key that is set.
        key: &'static str,
        /// Where it was set.
        origin: Origin,
        /// The key that is missing.
        partner: &'static str,
        /// The config file that was (or would have been) read.
        file: PathBuf,
    },
}

impl ConfigError {
    /// The dotted key the error is about, when it is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Missing { key, .. } | ConfigError::Unpaired { key, .. } => Some(key),
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::NotFound { .. } | ConfigError::Read { .. } | ConfigError::Parse { .. } => None,
        }
    }
}
