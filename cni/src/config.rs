//! The network configuration on stdin and the `CNI_*` environment: parsed and checked before
//! the agent is asked anything, each failure with the spec's code.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::error::{CniError, Code};

/// The spec versions this plugin speaks (results are shaped for the one the configuration
/// names).
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0.0", "1.1.0"];

/// The agent's socket when the configuration names none.
pub const DEFAULT_AGENT_SOCKET: &str = "/run/overlay-agent/api.sock";

/// What the runtime asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach the container to the network.
    Add,
    /// Detach it (idempotent).
    Del,
    /// Check that the attachment is as the last ADD made it.
    Check,
    /// Report the spec versions this plugin speaks.
    Version,
    /// (1.1) Whether ADD can be served now.
    Status,
    /// (1.1) Remove the attachments of this network that are not in the runtime's list.
    Gc,
}

impl Command {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }
}

/// The `CNI_*` variables a command needs, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID` (ADD, DEL, CHECK).
    pub container_id: String,
    /// `CNI_NETNS` (ADD, CHECK; optional for DEL).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME` (ADD, DEL, CHECK).
    pub ifname: String,
    /// `CNI_ARGS`, parsed.
    pub args: Args,
}

/// What `CNI_ARGS` may say to this plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    /// `IP=`: a fixed address.
    pub ip: Option<String>,
    /// `MAC=`: a fixed MAC.
    pub mac: Option<String>,
}

fn env_error(vars: &[&str], why: &str) -> CniError {
    CniError::new(Code::InvalidEnvironment, format!("invalid environment: {}", vars.join(", ")), why)
}

/// Reads `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`. `IP` and `MAC` are used; `K8S_*`
/// (what Kubernetes runtimes pass) and, with `IgnoreUnknown=1`, any other key are ignored.
pub fn parse_args(raw: &str) -> Result<Args, CniError> {
    let mut pairs = BTreeMap::new();
    for pair in raw.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(env_error(&["CNI_ARGS"], &format!("'{pair}' is not KEY=VALUE")));
        };
        pairs.insert(k.to_owned(), v.to_owned());
    }
    let ignore_unknown =
        pairs.get("IgnoreUnknown").is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true"));
    let mut args = Args::default();
    for (k, v) in pairs {
        match k.as_str() {
            "IP" => args.ip = Some(v),
            "MAC" => args.mac = Some(v),
            "IgnoreUnknown" => {}
            k if k.starts_with("K8S_") || ignore_unknown => {}
            k => {
                return Err(env_error(
                    &["CNI_ARGS"],
                    &format!("unknown key {k} (this plugin takes IP and MAC; add IgnoreUnknown=1 to ignore others)"),
                ))
            }
        }
    }
    Ok(args)
}

/// Reads the `CNI_*` variables through `get`.
pub fn invocation(get: impl Fn(&str) -> Option<String>) -> Result<Invocation, CniError> {
    let non_empty = |k: &str| get(k).filter(|v| !v.is_empty());
    let Some(raw) = non_empty("CNI_COMMAND") else {
        return Err(env_error(&["CNI_COMMAND"], "it is not set: give ADD, DEL, CHECK, VERSION, STATUS or GC"));
    };
    let Some(command) = Command::parse(&raw) else {
        return Err(env_error(
            &["CNI_COMMAND"],
            &format!("'{raw}' is not a CNI command: give ADD, DEL, CHECK, VERSION, STATUS or GC"),
        ));
    };
    let required: &[&str] = match command {
        Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
        Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
        Command::Version | Command::Status | Command::Gc => &[],
    };
    let missing: Vec<&str> = required.iter().copied().filter(|k| non_empty(k).is_none()).collect();
    if !missing.is_empty() {
        return Err(env_error(&missing, "required for this command and not set"));
    }
    let container_id = non_empty("CNI_CONTAINERID").unwrap_or_default();
    let ifname = non_empty("CNI_IFNAME").unwrap_or_default();
    if !required.is_empty() {
        if !is_container_id(&container_id) {
            return Err(env_error(
                &["CNI_CONTAINERID"],
                &format!("'{container_id}' is not a container id: [A-Za-z0-9][A-Za-z0-9_.-]{{0,127}}"),
            ));
        }
        if let Some(why) = ifname_error(&ifname) {
            return Err(env_error(&["CNI_IFNAME"], &format!("'{ifname}' is not an interface name: {why}")));
        }
    }
    let args = match command {
        Command::Add | Command::Check => parse_args(&get("CNI_ARGS").unwrap_or_default())?,
        _ => Args::default(),
    };
    Ok(Invocation { command, container_id, netns: non_empty("CNI_NETNS").map(PathBuf::from), ifname, args })
}

fn is_container_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Why the kernel (or the agent, which asks `[a-z0-9-]`) would refuse `name`.
fn ifname_error(name: &str) -> Option<&'static str> {
    if name.len() > 15 {
        Some("longer than 15 characters")
    } else if !name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-') {
        Some("use lower-case letters, digits and '-'")
    } else {
        None
    }
}

/// An attachment the runtime still uses (GC's `cni.dev/valid-attachments`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
pub struct Attachment {
    /// The container.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Its interface.
    pub ifname: String,
}

/// The network configuration, as far as this plugin reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// `cniVersion`: one of [`SUPPORTED_VERSIONS`].
    pub cni_version: String,
    /// `name`: the network.
    pub name: String,
    /// `tenant`: the overlay tenant the network is.
    pub tenant: String,
    /// `agentSocket`.
    pub agent_socket: PathBuf,
    /// `dns`, passed through to the result.
    pub dns: Option<Value>,
    /// `prevResult` (DEL, CHECK).
    pub prev_result: Option<Value>,
    /// `cni.dev/valid-attachments` (GC).
    pub valid_attachments: Vec<Attachment>,
    /// `runtimeConfig.portMappings` as the agent's published ports (`HOST:CONTAINER/PROTO`).
    pub publish: Vec<String>,
}

impl NetConf {
    /// The owner label of this network's endpoints in the agent.
    pub fn owner(&self) -> String {
        let name: String =
            self.name.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' }).collect();
        format!("cni:{}", name.chars().take(190).collect::<String>())
    }
}

/// The `cniVersion` of `stdin`, checked to be one this plugin speaks.
pub fn version_of(conf: &Value) -> Result<String, CniError> {
    let Some(v) = conf.get("cniVersion").and_then(Value::as_str).filter(|v| !v.is_empty()) else {
        return Err(CniError::new(
            Code::InvalidConfig,
            "invalid network configuration: no cniVersion",
            format!("give \"cniVersion\": one of {SUPPORTED_VERSIONS:?}"),
        ));
    };
    if !SUPPORTED_VERSIONS.contains(&v) {
        return Err(CniError::new(
            Code::IncompatibleVersion,
            "incompatible CNI versions",
            format!("config is \"{v}\", plugin supports {SUPPORTED_VERSIONS:?}"),
        ));
    }
    Ok(v.to_owned())
}

/// Decodes stdin as JSON.
pub fn decode(stdin: &[u8]) -> Result<Value, CniError> {
    serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            Code::DecodingFailure,
            "cannot decode the network configuration",
            format!("stdin is not JSON: {e}"),
        )
    })
}

/// Reads and checks the configuration of a network command (ADD, DEL, CHECK, STATUS, GC).
pub fn net_conf(conf: &Value) -> Result<NetConf, CniError> {
    let cni_version = version_of(conf)?;
    let invalid = |what: &str| CniError::new(Code::InvalidConfig, "invalid network configuration", what.to_owned());
    let string = |key: &str| conf.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
    let name = string("name").ok_or_else(|| invalid("no \"name\": give the network's name"))?;
    string("type").ok_or_else(|| invalid("no \"type\": give \"overlay-cni\""))?;
    let tenant = string("tenant").ok_or_else(|| {
        invalid("no \"tenant\": give the overlay tenant this network is (`overlay-agent tenant list` shows them)")
    })?;
    if let Some(ipam) = conf.get("ipam") {
        return Err(CniError::new(
            Code::UnsupportedField,
            "unsupported field in network configuration: ipam",
            format!(
                "ipam = {ipam}: the overlay-agent allocates addresses itself (per host subnet of the tenant); remove \
                 the ipam section, and pass a fixed address as CNI_ARGS IP="
            ),
        ));
    }
    let publish = match conf.pointer("/runtimeConfig/portMappings") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(mappings)) => mappings.iter().map(port_mapping).collect::<Result<_, _>>()?,
        Some(other) => return Err(invalid(&format!("runtimeConfig.portMappings = {other}: expected a list"))),
    };
    let agent_socket = match conf.get("agentSocket") {
        None => PathBuf::from(DEFAULT_AGENT_SOCKET),
        Some(Value::String(s)) if !s.is_empty() => PathBuf::from(s),
        Some(other) => {
            return Err(invalid(&format!("agentSocket = {other}: give the agent's socket path as a string")))
        }
    };
    let valid_attachments = match conf.get("cni.dev/valid-attachments") {
        None => Vec::new(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            CniError::new(
                Code::DecodingFailure,
                "cannot decode cni.dev/valid-attachments",
                format!("expected [{{\"containerID\": .., \"ifname\": ..}}]: {e}"),
            )
        })?,
    };
    Ok(NetConf {
        cni_version,
        name: name.to_owned(),
        tenant: tenant.to_owned(),
        agent_socket,
        dns: conf.get("dns").cloned(),
        prev_result: conf.get("prevResult").cloned(),
        valid_attachments,
        publish,
    })
}

/// One entry of the `portMappings` capability as a published port of the agent. The agent
/// publishes on the host's underlay address, so a `hostIP` other than the wildcard is refused
/// rather than published somewhere the runtime did not ask for.
fn port_mapping(m: &Value) -> Result<String, CniError> {
    let invalid = |why: String| CniError::new(Code::InvalidConfig, "invalid port mapping", why);
    let port = |key: &str| {
        m.get(key)
            .and_then(Value::as_u64)
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| invalid(format!("portMappings entry {m}: \"{key}\" must be a port number 1-65535")))
    };
    let (host, container) = (port("hostPort")?, port("containerPort")?);
    let protocol = match m.get("protocol").and_then(Value::as_str).unwrap_or("tcp").to_ascii_lowercase().as_str() {
        "" | "tcp" => "tcp",
        "udp" => "udp",
        other => {
            return Err(CniError::new(
                Code::UnsupportedField,
                "unsupported port mapping protocol",
                format!("portMappings entry {m}: protocol {other}: the overlay publishes tcp and udp ports only"),
            ))
        }
    };
    match m.get("hostIP").and_then(Value::as_str).unwrap_or("") {
        "" | "0.0.0.0" | "::" => {}
        ip => {
            return Err(CniError::new(
                Code::UnsupportedField,
                "unsupported port mapping hostIP",
                format!(
                    "portMappings entry {m}: hostIP {ip}: the overlay publishes ports on the host's underlay address \
                     only; publish without an address (-p {host}:{container})"
                ),
            ))
        }
    }
    Ok(format!("{host}:{container}/{protocol}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ];

    #[test]
    fn every_missing_variable_is_named() {
        for (drop, code) in [("CNI_CONTAINERID", 4), ("CNI_NETNS", 4), ("CNI_IFNAME", 4), ("CNI_PATH", 4)] {
            let pairs: Vec<_> = ADD.iter().copied().filter(|(k, _)| *k != drop).collect();
            let err = invocation(env(&pairs)).unwrap_err();
            assert_eq!((err.code as u32, err.msg.contains(drop)), (code, true), "{err}");
        }
        // DEL needs no namespace: the container may be gone.
        let del: Vec<_> = ADD.iter().map(|&(k, v)| if k == "CNI_COMMAND" { (k, "DEL") } else { (k, v) }).collect();
        let del: Vec<_> = del.into_iter().filter(|(k, _)| *k != "CNI_NETNS").collect();
        assert_eq!(invocation(env(&del)).unwrap().netns, None);
        assert_eq!(invocation(env(&[])).unwrap_err().code, Code::InvalidEnvironment);
        assert_eq!(invocation(env(&[("CNI_COMMAND", "ATTACH")])).unwrap_err().code, Code::InvalidEnvironment);
        assert_eq!(invocation(env(&[("CNI_COMMAND", "VERSION")])).unwrap().command, Command::Version);
    }

    #[test]
    fn cni_args_give_ip_and_mac_and_refuse_unknown_keys_unless_told() {
        assert_eq!(
            parse_args("IgnoreUnknown=1;K8S_POD_NAME=p;IP=198.19.0.9;MAC=02:00:00:00:00:09;FOO=bar").unwrap(),
            Args { ip: Some("198.19.0.9".into()), mac: Some("02:00:00:00:00:09".into()) }
        );
        assert_eq!(parse_args("").unwrap(), Args::default());
        assert_eq!(parse_args("FOO=bar").unwrap_err().code, Code::InvalidEnvironment);
        assert_eq!(parse_args("IP").unwrap_err().code, Code::InvalidEnvironment);
    }

    #[test]
    fn configuration_errors_carry_the_specs_codes() {
        let ok = serde_json::json!({"cniVersion": "1.0.0", "name": "red", "type": "overlay-cni", "tenant": "red"});
        let conf = net_conf(&ok).unwrap();
        assert_eq!((conf.agent_socket.to_str(), conf.owner()), (Some(DEFAULT_AGENT_SOCKET), "cni:red".to_owned()));
        let with = |k: &str, v: Value| {
            let mut c = ok.clone();
            c[k] = v;
            net_conf(&c).map(drop).unwrap_err().code
        };
        assert_eq!(with("cniVersion", "0.4.0".into()), Code::IncompatibleVersion);
        assert_eq!(with("cniVersion", "".into()), Code::InvalidConfig);
        assert_eq!(with("tenant", "".into()), Code::InvalidConfig);
        assert_eq!(with("ipam", serde_json::json!({"type": "host-local"})), Code::UnsupportedField);
        assert_eq!(with("agentSocket", 7.into()), Code::InvalidConfig);
        let mapped = |m: Value| {
            let mut c = ok.clone();
            c["runtimeConfig"] = serde_json::json!({"portMappings": m});
            net_conf(&c)
        };
        let ports = serde_json::json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""},
                                        {"hostPort": 5353, "containerPort": 53, "protocol": "UDP"},
                                        {"hostPort": 8443, "containerPort": 443}]);
        assert_eq!(mapped(ports).unwrap().publish, ["8080:80/tcp", "5353:53/udp", "8443:443/tcp"]);
        // An empty list is what a runtime passes when nothing is published.
        assert!(mapped(serde_json::json!([])).unwrap().publish.is_empty());
        let code = |m: Value| mapped(serde_json::json!([m])).map(drop).unwrap_err().code;
        assert_eq!(
            code(serde_json::json!({"hostPort": 8080, "containerPort": 80, "hostIP": "127.0.0.1"})),
            Code::UnsupportedField
        );
        assert_eq!(
            code(serde_json::json!({"hostPort": 8080, "containerPort": 80, "protocol": "sctp"})),
            Code::UnsupportedField
        );
        assert_eq!(code(serde_json::json!({"hostPort": 0, "containerPort": 80})), Code::InvalidConfig);
        assert_eq!(code(serde_json::json!({"hostPort": 8080, "containerPort": 70000})), Code::InvalidConfig);
        assert_eq!(decode(b"{nope").unwrap_err().code, Code::DecodingFailure);
    }
}
