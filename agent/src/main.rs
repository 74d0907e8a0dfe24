//! overlay-agent: the per-host daemon (`run`) and the CLI that talks to it over the local API.

use overlay_agent::{api, daemon};

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::{json, Value as JsonValue};

#[derive(Parser)]
#[command(
    name = "overlay-agent",
    version,
    about = "Multi-tenant container overlay on Open vSwitch, one agent per host"
)]
struct Cli {
    /// The agent's local API socket (for every command but `run`, which takes it from its config).
    #[arg(long, global = true, env = "OVERLAY_API_SOCKET", default_value = overlay_config::DEFAULT_API_SOCKET)]
    api_socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (the daemon).
    Run {
        #[command(flatten)]
        flags: Box<overlay_config::RunFlags>,
    },
    /// Manage tenants (cluster-wide, stored in etcd).
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Plug a container into a tenant network (prints JSON: ip, prefix, mac, gateway, mtu, port, tenant).
    Plug {
        /// Container id ([A-Za-z0-9][A-Za-z0-9_.-]{0,127}).
        container_id: String,
        /// Tenant name.
        #[arg(long)]
        tenant: String,
        /// The container's PID (its namespace is /proc/PID/ns/net).
        #[arg(long, conflicts_with = "netns", required_unless_present = "netns")]
        pid: Option<u32>,
        /// A network namespace file, e.g. /var/run/netns/NAME.
        #[arg(long)]
        netns: Option<PathBuf>,
        /// Interface name inside the container.
        #[arg(long, default_value = "eth0")]
        ifname: String,
        /// A fixed address instead of the next free one of this host's subnet.
        #[arg(long)]
        ip: Option<String>,
        /// A fixed MAC instead of one derived from the container id.
        #[arg(long)]
        mac: Option<String>,
    },
    /// Unplug a container: its port, veth, address and endpoint record go.
    Unplug {
        /// Container id.
        container_id: String,
    },
    /// List the containers plugged on this host.
    Endpoints {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show this host, its peers, tenants, tunnels and endpoints.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant network.
    Create {
        /// Tenant name ([A-Za-z0-9][A-Za-z0-9_.-]*).
        name: String,
        /// The VNI: GRE key / VXLAN VNI on the wire (1..16777215), unique in the cluster.
        #[arg(long)]
        vni: u32,
        /// The tenant's address range, e.g. 198.19.0.0/16.
        #[arg(long)]
        cidr: String,
        /// vxlan or gre.
        #[arg(long, default_value = "vxlan")]
        tunnel: String,
        /// Length of the per-host subnet leases (default 24 for IPv4).
        #[arg(long)]
        subnet_len: Option<u8>,
    },
    /// List tenants.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete a tenant (refused while it has endpoints).
    Delete {
        /// Tenant name.
        name: String,
    },
    /// Make this host take part in a tenant now (take a subnet lease) instead of at the first plug.
    Join {
        /// Tenant name.
        name: String,
    },
}

fn init_logging(config: &overlay_config::AgentConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    use std::io::IsTerminal;
    // Colours only on a terminal: journald and log files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log.format {
        overlay_config::LogFormat::Json => builder.json().init(),
        overlay_config::LogFormat::Text => builder.init(),
    }
}

async fn api(cli: &Cli, method: &str, path: &str, body: Option<JsonValue>) -> anyhow::Result<JsonValue> {
    let (status, json) = api::call(&cli.api_socket, method, path, body).await?;
    if status >= 400 {
        let msg = match json.get("error").and_then(JsonValue::as_str) {
            Some(m) => m.to_owned(),
            None => format!("the agent answered HTTP {status} to {method} {path}: {json}"),
        };
        anyhow::bail!("{msg}");
    }
    Ok(json)
}

/// One URL path segment, percent-encoded: a name like `../hosts` must stay one segment and
/// reach the agent's own validation, not be resolved as a path.
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn print_tenants(tenants: &JsonValue) {
    println!("{:<20} {:>9} {:<20} {:<6} {:>6} {:<16}", "NAME", "VNI", "CIDR", "TUNNEL", "SUBNET", "GATEWAY");
    for t in tenants.as_array().into_iter().flatten() {
        println!(
            "{:<20} {:>9} {:<20} {:<6} {:>6} {:<16}",
            t["name"].as_str().unwrap_or(""),
            t["vni"].to_string(),
            t["cidr"].as_str().unwrap_or(""),
            t["tunnel"].as_str().unwrap_or(""),
            format!("/{}", t["subnet_len"]),
            t["gateway"].as_str().unwrap_or("")
        );
    }
}

fn print_status(s: &JsonValue) {
    let h = &s["host"];
    println!(
        "host {} underlay {} (system-id {}, ovsdb {})",
        h["name"].as_str().unwrap_or("?"),
        h["underlay_ip"].as_str().unwrap_or("?"),
        h["system_id"].as_str().unwrap_or("?"),
        if h["ovsdb_connected"].as_bool() == Some(true) { "connected" } else { "DISCONNECTED" }
    );
    println!("peers:");
    for p in s["peers"].as_array().into_iter().flatten() {
        let alive = if p["alive"].as_bool() == Some(true) { "alive" } else { "not alive" };
        println!("  {:<24} {:<16} {alive}", p["host"].as_str().unwrap_or(""), p["underlay_ip"].as_str().unwrap_or(""));
    }
    println!("tenants:");
    for t in s["tenants"].as_array().into_iter().flatten() {
        println!(
            "  {:<20} vni {:<8} {:<6} {:<18} local-vlan {:<5} subnet {}",
            t["name"].as_str().unwrap_or(""),
            t["vni"].to_string(),
            t["tunnel"].as_str().unwrap_or(""),
            t["cidr"].as_str().unwrap_or(""),
            t["local_vlan"].as_u64().map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            t["subnet"].as_str().unwrap_or("-"),
        );
    }
    println!("tunnels:");
    for t in s["tunnels"].as_array().into_iter().flatten() {
        println!(
            "  {:<15} {:<5} key {:<8} -> {:<16} ({}, tenant {}, vlan {})",
            t["name"].as_str().unwrap_or(""),
            t["type"].as_str().unwrap_or(""),
            t["vni"].to_string(),
            t["remote_ip"].as_str().unwrap_or(""),
            t["peer"].as_str().unwrap_or(""),
            t["tenant"].as_str().unwrap_or(""),
            t["local_vlan"]
        );
    }
    println!("endpoints:");
    for e in s["endpoints"].as_array().into_iter().flatten() {
        println!(
            "  {:<24} {:<12} {:<18} {} {}",
            e["container"].as_str().unwrap_or(""),
            e["tenant"].as_str().unwrap_or(""),
            e["ip"].as_str().unwrap_or(""),
            e["mac"].as_str().unwrap_or(""),
            e["port"].as_str().unwrap_or("")
        );
    }
    for (label, key) in [("skipped peer", "skipped_peers"), ("CONFLICT", "conflicts")] {
        for x in s[key].as_array().into_iter().flatten() {
            println!("{label}: {}", x.as_str().unwrap_or(""));
        }
    }
    if let Some(e) = s["last_error"].as_str() {
        println!("last reconcile error: {e}");
    }
}

async fn main_inner(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Run { flags } => {
            let config = overlay_config::AgentConfig::load(flags)?;
            init_logging(&config);
            tracing::info!(version = env!("CARGO_PKG_VERSION"), host = %config.hostname, "overlay-agent starting");
            daemon::run(config).await
        }
        Command::Tenant { command } => match command {
            TenantCommand::Create { name, vni, cidr, tunnel, subnet_len } => {
                let body = json!({"name": name, "vni": vni, "cidr": cidr, "tunnel": tunnel, "subnet_len": subnet_len});
                let t = api(&cli, "POST", "/v1/tenants", Some(body)).await?;
                println!(
                    "tenant {} created: vni {} {} {} gateway {}",
                    t["name"].as_str().unwrap_or(""),
                    t["vni"],
                    t["tunnel"].as_str().unwrap_or(""),
                    t["cidr"].as_str().unwrap_or(""),
                    t["gateway"].as_str().unwrap_or("")
                );
                Ok(())
            }
            TenantCommand::List { json } => {
                let t = api(&cli, "GET", "/v1/tenants", None).await?;
                if *json {
                    println!("{}", serde_json::to_string_pretty(&t)?);
                } else {
                    print_tenants(&t);
                }
                Ok(())
            }
            TenantCommand::Delete { name } => {
                api(&cli, "DELETE", &format!("/v1/tenants/{}", seg(name)), None).await?;
                println!("tenant {name} deleted");
                Ok(())
            }
            TenantCommand::Join { name } => {
                let l = api(&cli, "POST", &format!("/v1/tenants/{}/join", seg(name)), None).await?;
                println!("this host takes part in {name} with subnet {}", l["subnet"].as_str().unwrap_or("?"));
                Ok(())
            }
        },
        Command::Plug { container_id, tenant, pid, netns, ifname, ip, mac } => {
            let netns = match (pid, netns) {
                (Some(p), _) => json!({"pid": p}),
                (None, Some(path)) => json!({"path": path}),
                (None, None) => anyhow::bail!("give --pid PID or --netns PATH"),
            };
            let body = json!({"container_id": container_id, "tenant": tenant, "netns": netns, "ifname": ifname, "ip": ip, "mac": mac});
            let r = api(&cli, "POST", "/v1/endpoints", Some(body)).await?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Command::Unplug { container_id } => {
            let r = api(&cli, "DELETE", &format!("/v1/endpoints/{}", seg(container_id)), None).await?;
            if r["was_plugged"].as_bool() == Some(true) {
                println!("container {container_id} unplugged");
            } else {
                println!("container {container_id} was not plugged on this host; nothing to do");
            }
            Ok(())
        }
        Command::Endpoints { json } => {
            let eps = api(&cli, "GET", "/v1/endpoints", None).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&eps)?);
            } else {
                println!("{:<28} {:<16} {:<18} {:<18} {:<15}", "CONTAINER", "TENANT", "IP", "MAC", "PORT");
                for e in eps.as_array().into_iter().flatten() {
                    let s = |k: &str| e[k].as_str().unwrap_or("").to_owned();
                    println!(
                        "{:<28} {:<16} {:<18} {:<18} {:<15}",
                        s("container_id"),
                        s("tenant"),
                        s("ip"),
                        s("mac"),
                        s("port")
                    );
                }
            }
            Ok(())
        }
        Command::Status { json } => {
            let s = api(&cli, "GET", "/v1/status", None).await.context("asking the agent for its status")?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print_status(&s);
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Run { .. }) {
        daemon::tune_malloc();
    }
    // The daemon wants worker threads; a CLI command is one request and answer, and starting
    // a thread pool for it would be most of its cost.
    let runtime = match &cli.command {
        Command::Run { .. } => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_current_thread().enable_all().build(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_inner(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
