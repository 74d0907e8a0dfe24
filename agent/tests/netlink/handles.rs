//! Namespace handles: opening by path or pid and the errors when that fails, each handle
//! acting in its own namespace on any runtime, outliving the namespace name, and the host
//! hearing of a container namespace's deletion.

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use overlay_agent::netlink::NetlinkError;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_bogus_netns_gives_clear_errors() {
    setup();
    let missing = Path::new("/proc/999999999/ns/net");
    let err = Netns::open(missing).await.unwrap_err();
    assert!(matches!(err, NetlinkError::NetnsNotFound { .. }), "{err:?}");
    assert_eq!(err.to_string(), "netns /proc/999999999/ns/net does not exist: is the container running?");

    let err = Netns::open(Path::new("/var/run/netns/no-such-netns-nl")).await.unwrap_err();
    assert!(matches!(err, NetlinkError::NetnsNotFound { .. }), "{err:?}");

    let file = tempfile::NamedTempFile::new().unwrap();
    let err = Netns::open(file.path()).await.unwrap_err();
    assert!(matches!(err, NetlinkError::NotANetns { .. }), "{err:?}");
    assert!(err.to_string().contains("is not a network namespace"), "{err}");

    let err = Netns::open(Path::new("/proc/self/ns/uts")).await.unwrap_err();
    assert!(matches!(err, NetlinkError::NotANetns { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_errors_name_link_and_netns() {
    let (h, c, host, container) = namespaces().await;
    let label = h.path().display().to_string();

    let a = testbed::unique_name("va");
    let b = testbed::unique_name("vb");
    host.create_veth(&a, &b).await.unwrap();
    let err = host.create_veth(&a, &testbed::unique_name("vx")).await.unwrap_err();
    assert!(matches!(&err, NetlinkError::AlreadyExists { name, .. } if *name == a), "{err:?}");
    assert_eq!(err.to_string(), format!("link {a} already exists in netns {label}"));
    let err = host.create_veth(&testbed::unique_name("vx"), &b).await.unwrap_err();
    assert!(matches!(&err, NetlinkError::AlreadyExists { name, .. } if *name == b), "{err:?}");

    // Moving onto a name the container already has.
    let y = testbed::unique_name("vy");
    let z = testbed::unique_name("vz");
    host.create_veth(&y, &z).await.unwrap();
    host.move_link(&b, &container, "eth0").await.unwrap();
    let err = host.move_link(&z, &container, "eth0").await.unwrap_err();
    assert!(matches!(err, NetlinkError::AlreadyExists { .. }), "{err:?}");
    assert!(err.to_string().contains(&c.path().display().to_string()), "{err}");
    assert!(h.has_link(&z), "a failed move leaves the link where it was");

    let err = host.set_up("nosuchlink0").await.unwrap_err();
    assert!(matches!(err, NetlinkError::LinkNotFound { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("link nosuchlink0 not found in netns {label}"));
    let err = container.configure_interface("eth9", &cfg4("198.19.0.10", None)).await.unwrap_err();
    assert!(matches!(err, NetlinkError::LinkNotFound { .. }), "{err:?}");
    let err = host.move_link("nosuchlink0", &container, "eth1").await.unwrap_err();
    assert!(matches!(err, NetlinkError::LinkNotFound { .. }), "{err:?}");
    let err = container.disable_tx_checksum("eth9").await.unwrap_err();
    assert!(matches!(err, NetlinkError::LinkNotFound { .. }), "{err:?}");

    let err = host.create_veth("a-name-longer-than-15", "x").await.unwrap_err();
    assert!(matches!(err, NetlinkError::InvalidName { .. }), "{err:?}");

    let mut bad = cfg4("198.19.0.10", Some("fd00::1"));
    let err = container.configure_interface("eth0", &bad).await.unwrap_err();
    assert!(matches!(err, NetlinkError::InvalidConfig { .. }), "{err:?}");
    bad = InterfaceConfig { prefix_len: 33, ..cfg4("198.19.0.10", None) };
    assert!(matches!(container.configure_interface("eth0", &bad).await, Err(NetlinkError::InvalidConfig { .. })));
    bad = InterfaceConfig { mac: [0x01, 0, 0x5e, 0, 0, 1], ..cfg4("198.19.0.10", None) };
    assert!(matches!(container.configure_interface("eth0", &bad).await, Err(NetlinkError::InvalidConfig { .. })));

    // A kernel refusal carries the errno and says what failed where.
    let err = container.set_mtu("eth0", 10).await.unwrap_err();
    assert!(matches!(err, NetlinkError::Request { .. }), "{err:?}");
    assert!(err.raw_os_error().is_some());
    assert!(err.to_string().starts_with(&format!("set MTU on link eth0 in netns {}", c.path().display())), "{err}");
    container.set_mtu("eth0", 1300).await.unwrap();
    assert_eq!(link_json(&c, "eth0")["mtu"], 1300);
    container.set_up("eth0").await.unwrap();
    assert!(container.interface_state("eth0").await.unwrap().unwrap().up);

    host.delete_link(&a).await.unwrap();
    host.delete_link(&y).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_handle_acts_in_its_own_namespace() {
    let (h, c, host, container) = namespaces().await;
    let agent = Netns::current().await.unwrap();
    assert_eq!(agent.path(), None);

    let a = testbed::unique_name("vi");
    let b = testbed::unique_name("vj");
    container.create_veth(&a, &b).await.unwrap();
    assert!(c.has_link(&a) && c.has_link(&b), "created in the container netns");
    assert!(!h.has_link(&a) && !h.has_link(&b), "not visible in the host netns");
    assert!(!host.link_exists(&a).await.unwrap());
    assert!(!agent.link_exists(&a).await.unwrap(), "not in the agent's own netns either");
    assert!(container.link_exists(&a).await.unwrap());

    // The same names can exist in both namespaces at once.
    host.create_veth(&a, &b).await.unwrap();
    assert!(h.has_link(&a));
    host.set_mtu(&a, 1234).await.unwrap();
    assert_eq!(link_json(&h, &a)["mtu"], 1234);
    assert_ne!(link_json(&c, &a)["mtu"], 1234, "the container's link of that name is untouched");

    // Moving from the agent's own netns and back (current() works as a move target).
    let x = testbed::unique_name("vk");
    let y = testbed::unique_name("vl");
    host.create_veth(&x, &y).await.unwrap();
    host.move_link(&y, &agent, &y).await.unwrap();
    assert!(agent.link_exists(&y).await.unwrap());
    assert!(!h.has_link(&y));
    agent.move_link(&y, &host, &y).await.unwrap();
    assert!(!agent.link_exists(&y).await.unwrap());
    assert!(h.has_link(&y));

    assert!(container.delete_link(&a).await.unwrap());
    assert!(host.delete_link(&a).await.unwrap());
    assert!(host.delete_link(&x).await.unwrap());
    assert!(!c.has_link(&b) && !h.has_link(&b) && !h.has_link(&y));
}

/// The namespace of the calling thread, as `net:[inode]`.
fn thread_netns() -> String {
    std::fs::read_link("/proc/thread-self/ns/net").unwrap().display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_plugs_on_a_busy_multithread_runtime() {
    setup();
    let own_netns = thread_netns();
    let h = testbed::Netns::new("nlh");
    let host = Netns::open(&h.path()).await.unwrap();

    // Other work going on meanwhile.
    let ticks = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut busy = Vec::new();
    for _ in 0..8 {
        let (ticks, stop) = (ticks.clone(), stop.clone());
        busy.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(1)).await;
                ticks.fetch_add(1, Ordering::Relaxed);
                seen.push(thread_netns());
            }
            seen
        }));
    }

    const N: usize = 6;
    let containers: Vec<testbed::Container> = (0..N).map(|_| testbed::Container::new("nlc")).collect();
    let mut plugs = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let host = host.clone();
        let path = c.path();
        plugs.push(tokio::spawn(async move {
            let container = Netns::open(&path).await.unwrap();
            let host_if = plugged_pair(&host, &container).await;
            let cfg = cfg4(&format!("198.19.1.{}", 10 + i), Some("198.19.0.1"));
            container.configure_interface("eth0", &cfg).await.unwrap();
            container.disable_tx_checksum("eth0").await.unwrap();
            (host_if, cfg)
        }));
    }
    let mut plugged = Vec::new();
    for p in plugs {
        plugged.push(p.await.expect("plug task"));
    }
    for (c, (host_if, cfg)) in containers.iter().zip(&plugged) {
        assert_configured(c, cfg);
        assert!(h.has_link(host_if));
        assert!(c.run(&["ethtool", "-k", "eth0"]).contains("tx-checksumming: off"));
    }
    // Checked on whatever workers run these: no runtime thread ever changed namespace.
    let mut checks = Vec::new();
    for _ in 0..64 {
        checks.push(tokio::spawn(async { thread_netns() }));
        checks.push(tokio::task::spawn_blocking(thread_netns));
    }
    for check in checks {
        assert_eq!(check.await.unwrap(), own_netns, "a runtime thread changed namespace");
    }
    stop.store(true, Ordering::Relaxed);
    for b in busy {
        let seen = b.await.unwrap();
        assert!(seen.iter().all(|ns| *ns == own_netns), "a busy task ran in another namespace");
    }
    assert!(ticks.load(Ordering::Relaxed) > 0, "the other tasks made progress");
    for (host_if, _) in &plugged {
        assert!(host.delete_link(host_if).await.unwrap());
    }
    for c in &containers {
        assert!(!c.has_link("eth0"));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn works_on_a_current_thread_runtime() {
    let (_h, c, host, container) = namespaces().await;
    let host_if = plugged_pair(&host, &container).await;
    let cfg = cfg4("198.19.0.10", Some("198.19.0.1"));
    container.configure_interface("eth0", &cfg).await.unwrap();
    container.disable_tx_checksum("eth0").await.unwrap();
    assert_configured(&c, &cfg);
    assert!(host.delete_link(&host_if).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_by_container_pid() {
    setup();
    let c = testbed::Container::new("nlc");
    // `ip netns exec` execs the command: the child's pid is the process inside the netns.
    let mut child = c.command(&["sleep", "30"]).spawn().unwrap();
    let path = format!("/proc/{}/ns/net", child.id());
    testbed::wait_until(Duration::from_secs(5), "sleep to enter the netns", || {
        std::fs::read_link(&path).ok() != std::fs::read_link("/proc/self/ns/net").ok()
    });
    let container = Netns::open(Path::new(&path)).await.unwrap();
    assert_eq!(container.path(), Some(Path::new(&path)));
    let a = testbed::unique_name("vq");
    container.create_veth(&a, &testbed::unique_name("vr")).await.unwrap();
    assert!(c.has_link(&a), "created in the container found by pid");
    child.kill().unwrap();
    child.wait().unwrap();
    // The process is gone: its /proc entry too, but the open handle still works.
    let err = Netns::open(Path::new(&path)).await.unwrap_err();
    assert!(matches!(err, NetlinkError::NetnsNotFound { .. }), "{err:?}");
    assert!(container.delete_link(&a).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_outlives_the_netns_name() {
    setup();
    let c = testbed::Container::new("nlc");
    let container = Netns::open(&c.path()).await.unwrap();
    let a = testbed::unique_name("vm");
    container.create_veth(&a, &testbed::unique_name("vn")).await.unwrap();
    drop(c); // `ip netns del`: the name goes, the namespace lives on while the handle holds it
    assert!(container.link_exists(&a).await.unwrap());
    let state = container.interface_state("lo").await.unwrap().unwrap();
    assert!(state.addresses.contains(&(IpAddr::from([127, 0, 0, 1]), 8)), "{state:?}");
}

#[tokio::test]
async fn deleting_a_containers_namespace_announces_its_veths_deletion_in_the_host_namespace() {
    let (_h, c, host, container) = namespaces().await;
    let mut deletions = host.link_deletions().await.unwrap();
    let host_if = testbed::unique_name("vh");
    host.create_veth_into(&host_if, "eth0", &container).await.unwrap();
    // A link that comes and goes by itself is announced too; a carrier change is not a deletion.
    let other = testbed::unique_name("vo");
    let other_peer = testbed::unique_name("vq");
    host.create_veth(&other, &other_peer).await.unwrap();
    host.set_up(&other).await.unwrap();
    assert!(host.delete_link(&other).await.unwrap());
    let first = tokio::time::timeout(Duration::from_secs(5), deletions.next()).await.unwrap().unwrap();
    assert!(first == other || first == other_peer, "{first}");
    // The container goes: its namespace, and the veth with it.
    drop(container);
    drop(c);
    let deleted = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match deletions.next().await {
                Some(name) if name == host_if => return name,
                Some(_) => {}
                None => panic!("the event stream ended"),
            }
        }
    })
    .await
    .expect("the host end's deletion was announced within 5 s");
    assert_eq!(deleted, host_if);
}
