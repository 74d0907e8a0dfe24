//! Unit tests of the configuration: where each value comes from ([`sources`]), what each key
//! accepts ([`validation`]), the TOML file and the shipped example ([`files`]), and the
//! machine's hostname ([`hostname`]).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser};

use crate::*;

mod files;
mod hostname;
mod sources;
mod validation;

/// Environment variables are process-global and clap reads every `OVERLAY_*` on each parse, so
/// every test that parses through clap holds this lock.
static ENV_LOCK: Mutex<()> = Mutex::new(());

#[derive(Debug, Parser)]
struct TestCli {
    #[command(flatten)]
    flags: RunFlags,
}

fn parse_cli(args: &[&str]) -> Result<RunFlags, clap::Error> {
    let argv = std::iter::once("overlay-agent").chain(args.iter().copied());
    TestCli::try_parse_from(argv).map(|c| c.flags)
}

fn flags() -> RunFlags {
    RunFlags { underlay_ip: Some("192.0.2.1".into()), ..RunFlags::default() }
}

fn host() -> Option<String> {
    Some("node1".into())
}

fn resolve_ok(flags: &RunFlags, file: Option<FileConfig>) -> AgentConfig {
    AgentConfig::resolve(flags, file, host()).expect("config should resolve")
}

fn resolve_err(flags: &RunFlags, file: Option<FileConfig>) -> ConfigError {
    AgentConfig::resolve(flags, file, host()).expect_err("config should be rejected")
}

fn toml(text: &str) -> FileConfig {
    FileConfig::parse(text, Path::new("/test/agent.toml")).expect("test TOML should parse")
}

fn file_with_ip(extra: &str) -> FileConfig {
    toml(&format!("underlay_ip = \"192.0.2.1\"\n{extra}"))
}

fn expect_invalid(err: ConfigError, key: &str) -> String {
    assert_eq!(err.key(), Some(key), "wrong key in: {err}");
    assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
    err.to_string()
}
