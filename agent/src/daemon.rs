//! `overlay-agent run`: identity, the OVSDB and etcd connections, registration, the etcd watch,
//! the reconcile loop, the dead-container watch, the local API and metrics, and a shutdown that
//! leaves the data plane up.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use overlay::model::{HostRecord, Liveness, TunnelType};
use overlay_config::AgentConfig;
use tokio::sync::watch;

use crate::agent::{Agent, LastPass, Metrics};
use crate::dataplane::DataPlane;
use crate::host::HostState;
use crate::plug::{HostFacts, PlugState};
use crate::registration::{keep_alive_key, keep_host_lease, register, RegisterOptions};
use crate::registry::{ClusterCache, Registry};

/// TLS options from the configured CA and client certificate (files read now, so a wrong path
/// is reported at start, naming the file).
fn etcd_tls(config: &AgentConfig) -> anyhow::Result<Option<etcd_client::TlsOptions>> {
    let Some(tls) = &config.etcd.tls else { return Ok(None) };
    let read = |p: &std::path::Path, what: &str| {
        std::fs::read(p).with_context(|| format!("reading the etcd {what} {} (etcd.{what}_file)", p.display()))
    };
    let mut opts = etcd_client::TlsOptions::new();
    match &tls.ca_file {
        Some(ca) => opts = opts.ca_certificate(etcd_client::Certificate::from_pem(read(ca, "ca")?)),
        None => opts = opts.with_native_roots(),
    }
    if let Some(id) = &tls.identity {
        opts = opts.identity(etcd_client::Identity::from_pem(read(&id.cert_file, "cert")?, read(&id.key_file, "key")?));
    }
    Ok(Some(opts))
}

/// The underlay MTU: configured, else the MTU of the link holding the underlay IP, else 1500.
async fn underlay_mtu(config: &AgentConfig, host_netns: &crate::netlink::Netns) -> u32 {
    if let Some(m) = config.underlay_mtu {
        return m;
    }
    match host_netns.mtu_of_address(config.underlay_ip).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            tracing::warn!(underlay_ip = %config.underlay_ip, "no interface holds the underlay IP; assuming MTU 1500 (set underlay_mtu)");
            1500
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the underlay MTU; assuming 1500 (set underlay_mtu)");
            1500
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT. `take_over` names the machine identity of a dead
/// machine whose hostname this one may take (`--take-over`).
pub async fn run(config: AgentConfig, take_over: Option<String>) -> anyhow::Result<()> {
    // Before anything is connected: a state directory that does not outlive the agent is a
    // configuration error, however far the agent would otherwise get.
    crate::identity::check_state_dir(&config.state_dir, std::env::var_os("RUNTIME_DIRECTORY").as_deref())?;
    let remote = config.ovs.remote.clone();
    let tls = config.ovs.tls.as_ref().map(|t| ovsdb_client::TlsSettings {
        ca_cert: t.ca_cert.clone(),
        certificate: t.certificate.clone(),
        private_key: t.private_key.clone(),
    });
    let ovs = crate::ovs::connect(remote, tls).await?;
    let (ovs_db_uuid, ovs_system_id) = {
        let r = ovs.replica();
        (crate::ovs::root(&r).map(|(u, _)| u.to_string()), crate::ovs::system_id(&r))
    };
    let identity = crate::identity::load_or_create(&config.state_dir, &crate::identity::facts(ovs_db_uuid))?;
    match identity.made {
        Some(why) => tracing::info!(machine_id = %identity.id, why, "new machine identity"),
        None => tracing::info!(machine_id = %identity.id, "machine identity"),
    }
    let me = HostRecord {
        hostname: config.hostname.clone(),
        underlay_ip: config.underlay_ip,
        system_id: ovs_system_id.unwrap_or_else(|| identity.id.clone()),
        machine_id: identity.id.clone(),
        tunnel_types: vec![TunnelType::Vxlan, TunnelType::Gre],
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    me.validate().context("this host's record is invalid")?;
    let auth = config.etcd.auth.as_ref().map(|a| (a.username.clone(), a.password.expose().to_owned()));
    let registry = Registry::connect(&config.etcd.endpoints, &config.etcd.prefix, auth, etcd_tls(&config)?).await?;
    let host_netns = match &config.host_netns {
        Some(p) => crate::netlink::Netns::open(p).await,
        None => crate::netlink::Netns::current().await,
    }
    .context("opening the host network namespace")?;
    let underlay_mtu = underlay_mtu(&config, &host_netns).await;
    tracing::info!(underlay_mtu, "underlay MTU");
    let (cluster_tx, cluster_rx) = watch::channel(ClusterCache::default());
    let dataplane = DataPlane::new(me.clone(), &config);
    let transit = overlay::gateway::TransitRange::new(config.gateway_transit_cidr).context("gateway_transit_cidr")?;
    let gateway = crate::gateway::GatewayPlane::new(
        &config.state_dir,
        transit,
        crate::gateway::endpoint_addresses(&config.etcd.endpoints),
        config.ovs.datapath_type == overlay_config::DatapathType::Netdev,
    );
    let agent = Arc::new(Agent {
        facts: HostFacts {
            hostname: me.hostname.clone(),
            machine_id: me.machine_id.clone(),
            underlay_ipv6: me.underlay_ip.is_ipv6(),
            underlay_mtu,
        },
        host: HostState::new(me.clone()),
        config: config.clone(),
        registry: registry.clone(),
        ovs,
        cluster: cluster_rx,
        host_netns,
        dataplane,
        plumbing: tokio::sync::Mutex::default(),
        gateway,
        gateway_memo: tokio::sync::Mutex::default(),
        plugs: PlugState::default(),
        metrics: Metrics::default(),
        last: Mutex::new(LastPass::default()),
    });

    // Status and metrics answer from the start: while another machine holds the hostname,
    // they are where the operator sees why.
    let mut tasks = vec![crate::api_server::serve(agent.clone(), config.api_socket.clone()).await?];
    if let Some(addr) = config.metrics_address {
        tasks.push(crate::metrics::serve(agent.clone(), addr).await?);
    }
    let opts = RegisterOptions {
        boot_id: crate::identity::boot_id(),
        take_over,
        host_ttl: config.timers.host_ttl,
        liveness_ttl: config.timers.liveness_ttl,
    };
    let liveness = Liveness {
        machine_id: me.machine_id.clone(),
        boot_id: opts.boot_id.clone(),
        pid: std::process::id(),
        underlay_ip: me.underlay_ip,
    };
    let liveness_lease = Arc::new(Mutex::new(None::<i64>));
    let started = {
        let (agent, liveness_lease, tasks_out) =
            (agent.clone(), liveness_lease.clone(), Arc::new(Mutex::new(Vec::new())));
        let handles = tasks_out.clone();
        let task = tokio::spawn(async move {
            let registration = register(&agent.registry, &agent.host, &opts).await;
            tracing::info!(
                host = %agent.host.me.hostname, underlay_ip = %agent.host.me.underlay_ip, lease = registration.host_lease,
                reattached = registration.reattached, machine_id = %agent.host.me.machine_id, "registered in etcd"
            );
            let ttl = agent.config.timers.liveness_ttl;
            let mut spawned = vec![
                tokio::spawn({
                    let r = agent.registry.clone();
                    async move { r.watch_forever(cluster_tx).await }
                }),
                tokio::spawn(keep_host_lease(agent.clone(), opts)),
                tokio::spawn(keep_alive_key(agent.clone(), liveness, ttl, liveness_lease)),
                tokio::spawn(crate::reconcile::reconcile_loop(agent.clone())),
                tokio::spawn(crate::reconcile::watch_dead_containers(agent.clone())),
            ];
            tasks_out.lock().expect("tasks lock").append(&mut spawned);
        });
        (task, handles)
    };
    tasks.push(started.0);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down, data plane left up"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down, data plane left up"),
    }
    for t in tasks.iter().chain(started.1.lock().expect("tasks lock").iter()) {
        t.abort();
    }
    // The host key and subnet leases stay (their lease outlives us): peers keep their tunnels
    // and a restarted agent re-attaches. Only the liveness key goes, so status shows us down.
    let lease = *liveness_lease.lock().expect("liveness lock");
    if let Some(l) = lease {
        let _ = tokio::time::timeout(Duration::from_secs(2), registry.revoke(l)).await;
    }
    let _ = std::fs::remove_file(&config.api_socket);
    Ok(())
}
