//! Running the `overlay-cni` plugin as a runtime does: environment, configuration on stdin,
//! result or error object on stdout.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::workspace_binary;

/// What one invocation printed and how it ended.
#[derive(Debug)]
pub struct CniOutcome {
    /// Exit status 0.
    pub ok: bool,
    /// stdout parsed as JSON (Null if empty).
    pub out: Value,
    /// stderr.
    pub stderr: String,
}

impl CniOutcome {
    /// The error object's code (None on success).
    pub fn code(&self) -> Option<u64> {
        (!self.ok).then(|| self.out["code"].as_u64().unwrap_or(0))
    }
}

/// Runs `overlay-cni` with exactly `env` and `stdin`.
pub fn invoke(env: &[(&str, String)], stdin: &str) -> CniOutcome {
    let mut child = Command::new(workspace_binary("overlay-cni"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("overlay-cni");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("writing stdin");
    let out = child.wait_with_output().expect("overlay-cni output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    CniOutcome {
        ok: out.status.success(),
        out: if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(json!({"raw": text}))
        },
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The environment of `command` for container `id`'s interface `ifname` in `netns`.
pub fn env(command: &str, id: &str, netns: &str, ifname: &str, args: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CNI_COMMAND", command.to_owned()),
        ("CNI_CONTAINERID", id.to_owned()),
        ("CNI_NETNS", netns.to_owned()),
        ("CNI_IFNAME", ifname.to_owned()),
        ("CNI_PATH", "/opt/cni/bin".to_owned()),
        ("CNI_ARGS", args.to_owned()),
    ]
}

/// A network configuration for `tenant` through the agent at `socket`.
pub fn conf(version: &str, tenant: &str, socket: &std::path::Path) -> Value {
    json!({"cniVersion": version, "name": format!("net-{tenant}"), "type": "overlay-cni", "tenant": tenant,
           "agentSocket": socket})
}
