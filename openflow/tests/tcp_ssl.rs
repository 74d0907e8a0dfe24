//! `tcp:` and `ssl:` targets against a REAL ovs-vswitchd listening on a private loopback
//! address (`ptcp:` and `pssl:` in the bridge's Controller column), with certificates from a
//! throwaway CA (testbed::make_ca). TLS is verified as ovsdb-client does it (by CA, as OVS
//! does). The loopback is the root namespace's, so this ovs-vswitchd runs there: testbed
//! serialises such tests machine-wide.

mod common;

use std::path::Path;
use std::time::Duration;

use common::within;
use openflow_client::{
    Action, ClientError, Connection, ConnectionOptions, Flow, FlowMod, FlowStatsRequest, Match, Target, TlsSettings,
};

use testbed::{make_ca, make_cert, OvsdbServer, Vswitchd};

fn tls(d: &Path, ca: &str, me: &str) -> TlsSettings {
    TlsSettings {
        ca_cert: d.join(format!("{ca}.crt")),
        certificate: d.join(format!("{me}.crt")),
        private_key: d.join(format!("{me}.key")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_ssl_targets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (db, vs, ip, tcp_port, ssl_port) = tokio::task::block_in_place(|| {
        testbed::require_root();
        make_ca(d, "ca");
        make_ca(d, "rogue");
        for (name, ca) in [("switch", "ca"), ("agent", "ca"), ("intruder", "rogue")] {
            make_cert(d, name, ca, &[]);
        }
        let db = OvsdbServer::start();
        let vs = Vswitchd::start(&db, None);
        vs.add_netdev_bridge(&db, "br-net", &["fail_mode=secure"]);
        let ip = testbed::private_loopback_ip();
        let (tcp_port, ssl_port) = (testbed::free_port_on(ip), testbed::free_port_on(ip));
        let p = |f: &str| d.join(f).display().to_string();
        db.vsctl_wait(&["set-ssl", &p("switch.key"), &p("switch.crt"), &p("ca.crt")]);
        db.vsctl_wait(&[
            "set-controller",
            "br-net",
            &format!("ptcp:{tcp_port}:{ip}"),
            &format!("pssl:{ssl_port}:{ip}"),
        ]);
        (db, vs, ip, tcp_port, ssl_port)
    });
    let options = |tls: Option<TlsSettings>| ConnectionOptions {
        tls,
        request_timeout: Duration::from_secs(5),
        ..ConnectionOptions::default()
    };
    // ovs-vswitchd opens the listeners shortly after the transaction: retry the connect.
    let connect = |target: Target, tls: Option<TlsSettings>| async move {
        let mut last = None;
        for _ in 0..100 {
            match Connection::connect(&target, options(tls.clone())).await {
                Ok(c) => return c,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("connect {target}: {:?}", last)
    };
    let flow = Flow::builder(0, 7).matching(Match::builder().in_port(3).build().unwrap()).action(Action::output(4));
    let flow = flow.build().unwrap();

    let tcp: Target = format!("tcp:{ip}:{tcp_port}").parse().unwrap();
    let c = within("tcp connect", connect(tcp, None)).await;
    within("bundle", c.bundle(&[FlowMod::add(flow.clone())])).await.unwrap();
    assert_eq!(within("dump", c.flows(&FlowStatsRequest::all())).await.unwrap(), vec![flow.clone()]);

    let ssl: Target = format!("ssl:{ip}:{ssl_port}").parse().unwrap();
    let c = within("ssl connect", connect(ssl.clone(), Some(tls(d, "ca", "agent")))).await;
    assert_eq!(within("dump", c.flows(&FlowStatsRequest::all())).await.unwrap(), vec![flow]);

    // A certificate from another CA is refused; no certificates at all is a typed error too.
    let e = within("intruder", Connection::connect(&ssl, options(Some(tls(d, "rogue", "intruder"))))).await;
    assert!(e.is_err(), "a certificate of another CA must not get in");
    let e = within("no tls", Connection::connect(&ssl, options(None))).await.unwrap_err();
    assert!(matches!(e, ClientError::BadTarget { .. }), "{e:?}");
    drop((vs, db));
}
