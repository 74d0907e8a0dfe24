//! overlay-agent: the per-host daemon (`run`) and the CLI that talks to it over the local API.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use overlay_agent::daemon;
use overlay_api::{Client, CreateTenant, EndpointInfo, NetnsRef, PlugRequest, Status, TenantInfo};

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
        /// Replace a machine that is gone for good under this hostname: give its machine id
        /// (the refusal to register names it). Its endpoints are removed, its subnets kept.
        #[arg(long, value_name = "MACHINE_ID")]
        take_over: Option<String>,
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
        /// A fixed MAC instead of one derived from the tenant and the address (so an address keeps
        /// its MAC from one container to the next).
        #[arg(long)]
        mac: Option<String>,
        /// Publish a port on this host's underlay address: HOST_PORT:CONTAINER_PORT[/tcp|/udp]
        /// (repeatable).
        #[arg(long, value_name = "HOST:CONTAINER[/PROTO]")]
        publish: Vec<String>,
    },
    /// Unplug a container: its port, veth, address and endpoint record go.
    Unplug {
        /// Container id.
        container_id: String,
        /// Only this interface of the container (default: all of them).
        #[arg(long)]
        ifname: Option<String>,
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
    /// Serve Docker's network and IPAM driver (a libnetwork remote plugin) for this host's agent:
    /// `docker network create -d NAME --ipam-driver NAME --ipam-opt tenant=red red`.
    DockerPlugin {
        /// The plugin's socket; Docker finds /run/docker/plugins/NAME.sock as plugin NAME (or
        /// through /etc/docker/plugins/NAME.spec holding unix://SOCKET).
        #[arg(long, env = "OVERLAY_DOCKER_PLUGIN_SOCKET", default_value = overlay_docker_plugin::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// The driver's name as Docker knows it, for hints in errors (default: the socket's file
        /// name without .sock).
        #[arg(long)]
        name: Option<String>,
        /// dockerd's API, where the plugin reads a network's tenant back.
        #[arg(long, env = "DOCKER_HOST", default_value = "unix:///var/run/docker.sock")]
        docker_host: String,
        /// How long a call of Docker's waits for an agent that is not answering (restarting).
        #[arg(long, default_value_t = 20, value_name = "SECONDS")]
        agent_wait: u64,
        /// How often the plugin compares the agent's endpoints with Docker's: labels ports with
        /// their container id, and unplugs an endpoint Docker lost (missing that long).
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        reconcile_interval: u64,
        /// Log filter (RUST_LOG syntax).
        #[arg(long, env = "OVERLAY_LOG_LEVEL", default_value = "info")]
        log_level: String,
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
        /// Whether containers reach beyond the tenant (SNAT through their host's gateway).
        #[arg(long, value_name = "on|off", default_value = "on", value_parser = ["on", "off"])]
        egress: String,
        /// A control-plane network (etcd, the hosts' underlay addresses) the tenant's
        /// containers may reach all the same (repeatable; default: none).
        #[arg(long = "allow", value_name = "CIDR")]
        allow: Vec<String>,
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

fn print_tenants(out: &mut impl Write, tenants: &[TenantInfo]) -> io::Result<()> {
    writeln!(
        out,
        "{:<20} {:>9} {:<20} {:<6} {:>6} {:<16} {:<6} ALLOW",
        "NAME", "VNI", "CIDR", "TUNNEL", "SUBNET", "GATEWAY", "EGRESS"
    )?;
    for t in tenants {
        writeln!(
            out,
            "{:<20} {:>9} {:<20} {:<6} {:>6} {:<16} {:<6} {}",
            t.name,
            t.vni,
            t.cidr,
            t.tunnel,
            format!("/{}", t.subnet_len),
            t.gateway,
            if t.egress { "on" } else { "off" },
            if t.control_plane_allow.is_empty() { "-".to_owned() } else { t.control_plane_allow.join(",") }
        )?;
    }
    Ok(())
}

fn print_endpoints(out: &mut impl Write, eps: &[EndpointInfo]) -> io::Result<()> {
    writeln!(
        out,
        "{:<28} {:<8} {:<16} {:<18} {:<18} {:<15} PUBLISHED",
        "CONTAINER", "IFNAME", "TENANT", "IP", "MAC", "PORT"
    )?;
    for e in eps {
        let published = if e.publish.is_empty() { "-".to_owned() } else { e.publish.join(",") };
        writeln!(
            out,
            "{:<28} {:<8} {:<16} {:<18} {:<18} {:<15} {published}",
            e.container_id, e.ifname, e.tenant, e.ip, e.mac, e.port
        )?;
    }
    Ok(())
}

fn print_status(out: &mut impl Write, s: &Status) -> io::Result<()> {
    let h = &s.host;
    writeln!(
        out,
        "host {} underlay {} (machine {}, ovsdb {})",
        h.name,
        h.underlay_ip,
        h.machine_id,
        if h.ovsdb_connected { "connected" } else { "DISCONNECTED" }
    )?;
    if let Some(why) = &h.identity_conflict {
        writeln!(out, "NOT REGISTERED: {why}")?;
    }
    if let Some(what) = &h.waiting_to_register {
        writeln!(out, "not registered yet: {what}")?;
    }
    writeln!(out, "peers:")?;
    for p in &s.peers {
        writeln!(
            out,
            "  {:<24} {:<16} {:<9} flows {}",
            p.host,
            p.underlay_ip,
            if p.alive { "alive" } else { "not alive" },
            p.flows
        )?;
    }
    writeln!(out, "tenants:")?;
    for t in &s.tenants {
        writeln!(
            out,
            "  {:<20} vni {:<8} {:<6} {:<18} local-vlan {:<5} subnet {:<18} flows {}",
            t.tenant.name,
            t.tenant.vni,
            t.tenant.tunnel,
            t.tenant.cidr,
            t.local_vlan.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            t.subnet.as_deref().unwrap_or("-"),
            t.flows,
        )?;
    }
    writeln!(out, "tunnels:")?;
    for t in &s.tunnels {
        writeln!(
            out,
            "  {:<15} {:<5} key {:<8} remote_ip=flow ofport {:<6} (tenant {}, vlan {}, {} peers)",
            t.name,
            t.kind,
            t.vni,
            t.ofport.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            t.tenant,
            t.local_vlan,
            t.peers
        )?;
    }
    writeln!(
        out,
        "flows: {} on the tunnel bridge, {} on the integration bridge{}",
        s.flows.tun,
        s.flows.int,
        if s.flows.pending { " (changes not applied yet: see last reconcile error)" } else { "" }
    )?;
    writeln!(out, "gateways:")?;
    for g in &s.gateways {
        writeln!(
            out,
            "  {:<20} vni {:<8} {:<16} mac {} transit {:<16} egress {:<3} published [{}]",
            g.tenant,
            g.vni,
            g.address,
            g.mac,
            g.transit,
            if g.egress { "on" } else { "off" },
            g.published.join(", ")
        )?;
    }
    for x in &s.gateway_skipped {
        writeln!(out, "  left out: {x}")?;
    }
    writeln!(out, "endpoints:")?;
    for e in &s.endpoints {
        let published =
            if e.publish.is_empty() { String::new() } else { format!(" published {}", e.publish.join(",")) };
        writeln!(
            out,
            "  {:<24} {:<6} {:<12} {:<18} {} {}{published}",
            e.container_id, e.ifname, e.tenant, e.ip, e.mac, e.port
        )?;
    }
    for x in &s.skipped_peers {
        writeln!(out, "skipped peer: {x}")?;
    }
    for x in &s.conflicts {
        writeln!(out, "CONFLICT: {x}")?;
    }
    if let Some(e) = &s.last_error {
        writeln!(out, "last reconcile error: {e}")?;
    }
    Ok(())
}

fn print_json(out: &mut impl Write, v: &impl serde::Serialize) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, v)?;
    writeln!(out)
}

/// A write to stdout failed. A reader that went away (`overlay-agent status | head -2`) ends
/// the command quietly, as it ends other Unix tools; any other failure is reported.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to stdout")]
struct StdoutError(#[source] io::Error);

/// Runs `print` on stdout, flushed at the end.
fn emit(print: impl FnOnce(&mut io::StdoutLock<'static>) -> io::Result<()>) -> Result<(), StdoutError> {
    let mut out = io::stdout().lock();
    print(&mut out).and_then(|()| out.flush()).map_err(StdoutError)
}

/// Whether `e` is a write to a stdout whose reader went away.
fn reader_gone(e: &anyhow::Error) -> bool {
    e.downcast_ref::<StdoutError>().is_some_and(|StdoutError(io)| io.kind() == io::ErrorKind::BrokenPipe)
}

async fn main_inner(cli: Cli) -> anyhow::Result<()> {
    let api = Client::new(&cli.api_socket);
    match cli.command {
        Command::Run { flags, take_over } => {
            let config = overlay_config::AgentConfig::load(&flags)?;
            init_logging(&config);
            tracing::info!(version = env!("CARGO_PKG_VERSION"), host = %config.hostname, "overlay-agent starting");
            daemon::run(config, take_over).await
        }
        Command::Tenant { command } => match command {
            TenantCommand::Create { name, vni, cidr, tunnel, subnet_len, egress, allow } => {
                let request = CreateTenant {
                    name,
                    vni,
                    cidr,
                    tunnel: Some(tunnel),
                    subnet_len,
                    egress: Some(egress == "on"),
                    control_plane_allow: allow,
                };
                let t = api.create_tenant(&request).await?;
                emit(|o| {
                    writeln!(
                        o,
                        "tenant {} created: vni {} {} {} gateway {} egress {}",
                        t.name,
                        t.vni,
                        t.tunnel,
                        t.cidr,
                        t.gateway,
                        if t.egress { "on" } else { "off" }
                    )
                })?;
                Ok(())
            }
            TenantCommand::List { json } => {
                let t = api.tenants().await?;
                Ok(emit(|o| if json { print_json(o, &t) } else { print_tenants(o, &t) })?)
            }
            TenantCommand::Delete { name } => {
                api.delete_tenant(&name).await?;
                emit(|o| writeln!(o, "tenant {name} deleted"))?;
                Ok(())
            }
            TenantCommand::Join { name } => {
                let l = api.join_tenant(&name).await?;
                emit(|o| writeln!(o, "this host takes part in {name} with subnet {}", l.subnet))?;
                Ok(())
            }
        },
        Command::Plug { container_id, tenant, pid, netns, ifname, ip, mac, publish } => {
            let netns = match (pid, netns) {
                (Some(p), _) => NetnsRef::Pid(p),
                (None, Some(path)) => NetnsRef::Path(path),
                (None, None) => anyhow::bail!("give --pid PID or --netns PATH"),
            };
            let r = api
                .plug(&PlugRequest { ifname, ip, mac, publish, ..PlugRequest::new(container_id, tenant, netns) })
                .await?;
            emit(|o| {
                serde_json::to_writer(&mut *o, &r)?;
                writeln!(o)
            })?;
            Ok(())
        }
        Command::Unplug { container_id, ifname } => {
            let r = api.unplug(&container_id, ifname.as_deref()).await?;
            let what = match &ifname {
                Some(i) => format!("container {container_id} interface {i}"),
                None => format!("container {container_id}"),
            };
            if r.was_plugged {
                emit(|o| writeln!(o, "{what} unplugged"))?;
            } else {
                emit(|o| writeln!(o, "{what} was not plugged on this host; nothing to do"))?;
            }
            Ok(())
        }
        Command::Endpoints { json } => {
            let eps = api.endpoints().await?;
            Ok(emit(|o| if json { print_json(o, &eps) } else { print_endpoints(o, &eps) })?)
        }
        Command::DockerPlugin { socket, name, docker_host, agent_wait, reconcile_interval, log_level } => {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log_level));
            use std::io::IsTerminal;
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .init();
            let name = name.unwrap_or_else(|| {
                socket.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "overlay-agent".into())
            });
            let config = overlay_docker_plugin::Config {
                socket,
                name,
                agent_socket: cli.api_socket.clone(),
                docker_host,
                agent_wait: std::time::Duration::from_secs(agent_wait),
                reconcile_interval: std::time::Duration::from_secs(reconcile_interval.max(1)),
            };
            overlay_docker_plugin::serve(config, shutdown_signal()).await?;
            Ok(())
        }
        Command::Status { json } => {
            let s = api.status().await.context("asking the agent for its status")?;
            Ok(emit(|o| if json { print_json(o, &s) } else { print_status(o, &s) })?)
        }
    }
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        // No handlers: serve until killed.
        _ => std::future::pending().await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Run { .. }) {
        overlay_agent::memory::tune_malloc();
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
        Err(e) if reader_gone(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
