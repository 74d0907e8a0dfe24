//! A throwaway PKI made with the `openssl` command: CAs and EC P-256 certificates they sign, for
//! tests of TLS to etcd and `ssl:` to ovsdb-server.

use std::path::Path;
use std::process::Command;

use crate::require::require_binary;

const EC: [&str; 5] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

fn openssl(dir: &Path, args: &[&str]) {
    let bin = require_binary("openssl", "apt-get install openssl");
    let out = Command::new(bin).current_dir(dir).args(args).output().expect("running openssl");
    assert!(out.status.success(), "testbed: openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Makes `<name>.key` and a self-signed CA certificate `<name>.crt` in `dir`.
pub fn make_ca(dir: &Path, name: &str) {
    let (key, crt, subj) = (format!("{name}.key"), format!("{name}.crt"), format!("/CN={name}"));
    let mut args = vec!["req", "-x509", "-days", "2", "-subj", &subj, "-keyout", &key, "-out", &crt];
    args.extend(EC);
    args.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    openssl(dir, &args);
}

/// Makes `<name>.key` and a v3 certificate `<name>.crt` signed by CA `<ca>` (made with
/// [`make_ca`]) in `dir`. `extensions` are openssl extension lines (e.g.
/// `subjectAltName=IP:127.0.0.1`); with none the certificate has no subjectAltName, like
/// ovs-pki's.
pub fn make_cert(dir: &Path, name: &str, ca: &str, extensions: &[&str]) {
    let (key, csr, crt, subj) =
        (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"), format!("/CN={name}"));
    let mut args = vec!["req", "-new", "-subj", &subj, "-keyout", &key, "-out", &csr];
    args.extend(EC);
    openssl(dir, &args);
    let ext = format!("{name}.ext");
    let mut lines = vec!["basicConstraints=CA:FALSE"];
    lines.extend_from_slice(extensions);
    std::fs::write(dir.join(&ext), lines.join("\n") + "\n").expect("writing the extension file");
    let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &crt,
            "-extfile",
            &ext,
        ],
    );
}
