//! overlay-cni: a CNI plugin (spec 1.0.0, and 1.1.0 with STATUS and GC) that attaches
//! containers to an overlay-agent tenant through the agent's local API. It links no etcd or
//! OVSDB code: the agent does the plumbing, records and address management; the plugin turns
//! CNI's environment and configuration into API calls and the answers into CNI results and
//! error objects.
//!
//! Network configuration: `{"cniVersion": "1.0.0", "name": "red", "type": "overlay-cni",
//! "tenant": "red", "agentSocket": "/run/overlay-agent/api.sock"}` (`agentSocket` optional,
//! that default; `dns` passed through to the result). `CNI_ARGS` `IP=` and `MAC=` fix the
//! address and MAC.

#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod result;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use overlay_api::{Client, ClientError, NetnsRef, PlugRequest};
use serde_json::{json, Value};

use config::{Command, Invocation, NetConf, SUPPORTED_VERSIONS};
use error::{CniError, Code};

/// How long one call of the agent may take before the runtime is told to try again.
const AGENT_TIMEOUT: Duration = Duration::from_secs(60);

/// What the plugin prints on stdout and its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// A result, a version report, an error object, or nothing.
    pub stdout: String,
    /// 0 on success.
    pub status: i32,
}

/// Runs one CNI command: the environment through `env`, the configuration on `stdin`.
pub fn run(env: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    // The error object speaks the configuration's version when there is one.
    let version = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(str::to_owned))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1].to_owned());
    match execute(env, stdin) {
        Ok(out) => Outcome { stdout: out.map(|v| v.to_string()).unwrap_or_default(), status: 0 },
        Err(e) => Outcome { stdout: e.to_json(&version), status: 1 },
    }
}

fn execute(env: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let inv = config::invocation(env)?;
    if inv.command == Command::Version {
        // The runtime sends {"cniVersion": ..}; any version it asks in is answered.
        let asked = serde_json::from_slice::<Value>(stdin).ok();
        let version = asked
            .as_ref()
            .and_then(|v| v.get("cniVersion").and_then(Value::as_str))
            .filter(|v| SUPPORTED_VERSIONS.contains(v))
            .unwrap_or(SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1]);
        return Ok(Some(json!({"cniVersion": version, "supportedVersions": SUPPORTED_VERSIONS})));
    }
    let conf = config::net_conf(&config::decode(stdin)?)?;
    if matches!(inv.command, Command::Status | Command::Gc) && conf.cni_version == "1.0.0" {
        return Err(CniError::new(
            Code::IncompatibleVersion,
            "incompatible CNI versions",
            "STATUS and GC are CNI 1.1.0 commands; the configuration says 1.0.0",
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(Code::IoFailure, "cannot start the plugin's runtime", e.to_string()))?;
    let client = Client::new(&conf.agent_socket);
    runtime.block_on(async {
        match inv.command {
            Command::Add => add(&client, &conf, &inv).await.map(Some),
            Command::Del => del(&client, &inv).await.map(|()| None),
            Command::Check => check(&client, &conf, &inv).await.map(|()| None),
            Command::Status => status(&client).await.map(|()| None),
            Command::Gc => gc(&client, &conf).await.map(|()| None),
            Command::Version => unreachable!("answered above"),
        }
    })
}

/// One call of the agent, bounded by [`AGENT_TIMEOUT`].
async fn call<T>(what: &str, fut: impl Future<Output = Result<T, ClientError>>) -> Result<T, CallError> {
    match tokio::time::timeout(AGENT_TIMEOUT, fut).await {
        Ok(r) => r.map_err(CallError::Agent),
        Err(_) => Err(CallError::TimedOut(format!("{what} took longer than {} s", AGENT_TIMEOUT.as_secs()))),
    }
}

enum CallError {
    Agent(ClientError),
    TimedOut(String),
}

impl CallError {
    /// The CNI error for a failed call: transient failures ask the runtime to try again; an
    /// unknown tenant is a configuration error; other refusals carry the agent's explanation.
    fn into_cni(self, command: Command) -> CniError {
        let e = match self {
            CallError::TimedOut(m) => return CniError::new(Code::TryAgainLater, "the overlay-agent did not answer", m),
            CallError::Agent(e) => e,
        };
        if e.is_transient() {
            return CniError::new(Code::TryAgainLater, "the overlay-agent cannot serve the request now", e.to_string());
        }
        match (e.status(), command) {
            (Some(404), Command::Add) => {
                CniError::new(Code::InvalidConfig, "invalid network configuration", e.to_string())
            }
            (Some(404 | 409), Command::Check) => {
                CniError::new(Code::CheckFailed, "the attachment is not as added", e.to_string())
            }
            _ => CniError::new(Code::AgentRefused, "the overlay-agent refused the request", e.to_string()),
        }
    }
}

/// The container's namespace, which ADD and CHECK need to exist.
fn netns_of(inv: &Invocation) -> Result<std::path::PathBuf, CniError> {
    let netns = inv.netns.clone().expect("checked with the environment");
    if !netns.exists() {
        return Err(CniError::new(
            Code::UnknownContainer,
            "the container does not exist",
            format!("its network namespace {} is gone", netns.display()),
        ));
    }
    Ok(netns)
}

fn request(conf: &NetConf, inv: &Invocation, netns: std::path::PathBuf) -> PlugRequest {
    PlugRequest {
        ifname: inv.ifname.clone(),
        ip: inv.args.ip.clone(),
        mac: inv.args.mac.clone(),
        owner: Some(conf.owner()),
        publish: conf.publish.clone(),
        ..PlugRequest::new(&inv.container_id, &conf.tenant, NetnsRef::Path(netns))
    }
}

async fn add(client: &Client, conf: &NetConf, inv: &Invocation) -> Result<Value, CniError> {
    let netns = netns_of(inv)?;
    let plugged = call("the plug", client.plug(&request(conf, inv, netns.clone())))
        .await
        .map_err(|e| e.into_cni(Command::Add))?;
    Ok(result::add_result(conf, &netns, &plugged))
}

/// Idempotent: nothing plugged, nothing to do; the namespace may be gone.
async fn del(client: &Client, inv: &Invocation) -> Result<(), CniError> {
    call("the unplug", client.unplug(&inv.container_id, Some(&inv.ifname)))
        .await
        .map(drop)
        .map_err(|e| e.into_cni(Command::Del))
}

async fn check(client: &Client, conf: &NetConf, inv: &Invocation) -> Result<(), CniError> {
    let Some(prev) = &conf.prev_result else {
        return Err(CniError::new(
            Code::InvalidConfig,
            "invalid network configuration",
            "CHECK needs prevResult, the result of the ADD it checks",
        ));
    };
    let (ip, mac) = result::previous(prev, &inv.ifname)?;
    let netns = netns_of(inv)?;
    let req = PlugRequest { ip: Some(ip.to_string()), mac, ..request(conf, inv, netns) };
    call("the check", client.check(&req)).await.map(drop).map_err(|e| e.into_cni(Command::Check))
}

/// Ready when the agent answers, holds its hostname and talks to OVS.
async fn status(client: &Client) -> Result<(), CniError> {
    let not_available = |why: String| CniError::new(Code::NotAvailable, "the overlay-agent cannot plug now", why);
    let s = match call("the status", client.status()).await {
        Ok(s) => s,
        Err(CallError::Agent(e)) => return Err(not_available(e.to_string())),
        Err(CallError::TimedOut(m)) => return Err(not_available(m)),
    };
    if let Some(why) = &s.host.identity_conflict {
        return Err(not_available(format!("it does not hold its hostname: {why}")));
    }
    if !s.host.registered {
        return Err(not_available("it is still registering in etcd".into()));
    }
    if !s.host.ovsdb_connected {
        return Err(not_available("it has no OVSDB session".into()));
    }
    Ok(())
}

/// Unplugs this network's endpoints on this host that the runtime no longer lists.
async fn gc(client: &Client, conf: &NetConf) -> Result<(), CniError> {
    let valid: BTreeSet<(&str, &str)> =
        conf.valid_attachments.iter().map(|a| (a.container_id.as_str(), a.ifname.as_str())).collect();
    let owner = conf.owner();
    let endpoints = call("listing endpoints", client.endpoints()).await.map_err(|e| e.into_cni(Command::Gc))?;
    for ep in endpoints.iter().filter(|e| e.owner.as_deref() == Some(owner.as_str())) {
        if !valid.contains(&(ep.container_id.as_str(), ep.ifname.as_str())) {
            call("the unplug", client.unplug(&ep.container_id, Some(&ep.ifname)))
                .await
                .map_err(|e| e.into_cni(Command::Gc))?;
        }
    }
    Ok(())
}
