//! `ssl:` remotes against a real ovsdb-server started with `--remote=pssl:` and certificates
//! from a throwaway CA. Like ovs-pki's, the server certificate carries no subjectAltName: OVS
//! authenticates by CA, and so does this client.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ovsdb_client::{Connection, ConnectionOptions, RpcError, TlsSettings};
use testbed::{make_ca, make_cert, ChildGuard};

fn settings(d: &Path, ca: &str, me: &str) -> TlsSettings {
    TlsSettings {
        ca_cert: d.join(format!("{ca}.crt")),
        certificate: d.join(format!("{me}.crt")),
        private_key: d.join(format!("{me}.key")),
    }
}

async fn connect(ip: Ipv4Addr, port: u16, tls: TlsSettings) -> Result<Vec<String>, RpcError> {
    let remote = format!("ssl:{ip}:{port}").parse().unwrap();
    let opts = ConnectionOptions { tls: Some(tls), request_timeout: Duration::from_secs(5), ..Default::default() };
    let conn = Connection::connect_with(&remote, opts).await?;
    conn.list_dbs().await
}

#[tokio::test]
async fn ssl_remote_with_client_certificates() {
    testbed::require_ovs();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_ca(d, "ca");
    make_ca(d, "rogue");
    for (name, ca) in [("server", "ca"), ("client", "ca"), ("intruder", "rogue")] {
        make_cert(d, name, ca, &[]);
    }
    let db = d.join("conf.db");
    let st = Command::new("ovsdb-tool").args(["create"]).arg(&db).arg(testbed::VSWITCH_SCHEMA).status().unwrap();
    assert!(st.success());
    let ip = testbed::private_loopback_ip();
    let port = testbed::free_port_on(ip);
    let _server = ChildGuard(
        Command::new("ovsdb-server")
            .arg(&db)
            .arg(format!("--remote=pssl:{port}:{ip}"))
            .args(["--private-key=server.key", "--certificate=server.crt", "--ca-cert=ca.crt"])
            .arg(format!("--unixctl={}", d.join("ctl").display()))
            .arg("--no-chdir")
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ovsdb-server"),
    );
    testbed::wait_until(Duration::from_secs(10), &format!("ovsdb-server to listen on pssl:{port}:{ip}"), || {
        std::net::TcpStream::connect((ip, port)).is_ok()
    });
    let dbs = connect(ip, port, settings(d, "ca", "client")).await.expect("ssl with the right CA and certificate");
    assert!(dbs.contains(&"Open_vSwitch".to_owned()), "{dbs:?}");

    // A client whose certificate another CA signed is refused by the server.
    let e = connect(ip, port, TlsSettings { ca_cert: d.join("ca.crt"), ..settings(d, "ca", "intruder") }).await;
    assert!(e.is_err(), "the server accepted a certificate from another CA");
    // A client that trusts another CA refuses the server.
    let e = connect(ip, port, settings(d, "rogue", "client")).await.unwrap_err().to_string();
    assert!(e.contains("TLS handshake failed"), "{e}");
    // Missing files are named.
    let e = connect(ip, port, TlsSettings { ca_cert: d.join("nope.crt"), ..settings(d, "ca", "client") })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nope.crt"), "{e}");
    // An ssl: remote without settings says what it needs.
    let remote = format!("ssl:{ip}:{port}").parse().unwrap();
    let e = Connection::connect(&remote).await.unwrap_err().to_string();
    assert!(e.contains("CA certificate"), "{e}");
}
