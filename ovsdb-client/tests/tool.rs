//! The `ovsdb-tool` example binary against a private ovsdb-server.
//!
//! `cargo test -p ovsdb-client` builds the examples along with the tests, but a run filtered to
//! this file (`cargo test --test tool`) does not, so [`tool`] runs `cargo build --example
//! ovsdb-tool` once first: a no-op when it is current, and it never runs a stale binary.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value as Json};
use testbed::OvsdbServer;

/// Path of the built example, building it if needed.
fn tool() -> &'static PathBuf {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| {
        // This test runs as target/<profile>/deps/tool-<hash>; examples are in
        // target/<profile>/examples.
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>/deps/<test>").to_path_buf();
        let target_dir = profile_dir.parent().expect("target/<profile>").to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "ovsdb-client", "--example", "ovsdb-tool"])
            .arg("--target-dir")
            .arg(&target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let out = cmd.output().expect("run cargo build --example ovsdb-tool");
        assert!(
            out.status.success(),
            "cargo build --example ovsdb-tool failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = profile_dir.join("examples").join("ovsdb-tool");
        assert!(path.is_file(), "{} was not built", path.display());
        path
    })
}

fn command(server: &OvsdbServer, args: &[&str]) -> Command {
    let mut cmd = Command::new(tool());
    cmd.env_remove("OVSDB_REMOTE").arg("--db").arg(server.unix_remote()).arg("--timeout").arg("10").args(args);
    cmd
}

fn run(server: &OvsdbServer, args: &[&str]) -> Output {
    command(server, args).output().expect("run ovsdb-tool")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: Output) -> String {
    assert!(o.status.success(), "ovsdb-tool failed ({}):\n{}", o.status, stderr(&o));
    stdout(&o)
}

#[track_caller]
fn fails(o: Output) -> String {
    assert_eq!(o.status.code(), Some(1), "want exit 1; stdout:\n{}\nstderr:\n{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn list_dbs_prints_one_per_line() {
    let server = OvsdbServer::start();
    let out = ok(run(&server, &["list-dbs"]));
    let dbs: Vec<&str> = out.lines().collect();
    assert!(dbs.contains(&"Open_vSwitch"), "{out}");
}

#[test]
fn get_schema_prints_the_schema_json() {
    let server = OvsdbServer::start();
    let schema: Json = serde_json::from_str(&ok(run(&server, &["get-schema", "Open_vSwitch"]))).unwrap();
    assert_eq!(schema["name"], "Open_vSwitch");
    assert!(schema["tables"]["Bridge"]["columns"]["ports"].is_object());
    let err = fails(run(&server, &["get-schema", "No_Such_Db"]));
    assert!(err.contains("No_Such_Db") && err.contains("unknown database"), "{err}");
}

#[test]
fn transact_insert_then_select() {
    let server = OvsdbServer::start();
    let insert = json!(["Open_vSwitch",
        {"op": "insert", "table": "Interface", "row": {"name": "tp0"}, "uuid-name": "i"},
        {"op": "insert", "table": "Port", "row": {"name": "tp0", "interfaces": ["named-uuid", "i"]}, "uuid-name": "p"},
        {"op": "insert", "table": "Bridge", "row": {"name": "tbr0", "ports": ["named-uuid", "p"]}, "uuid-name": "b"},
        {"op": "mutate", "table": "Open_vSwitch", "where": [],
         "mutations": [["bridges", "insert", ["set", [["named-uuid", "b"]]]]]}]);
    let results: Json = serde_json::from_str(&ok(run(&server, &["transact", &insert.to_string()]))).unwrap();
    assert_eq!(results.as_array().unwrap().len(), 4, "{results}");
    assert_eq!(results[0]["uuid"][0], "uuid", "{results}");
    assert_eq!(results[3]["count"], 1, "{results}");

    let select = json!(["Open_vSwitch", {"op": "select", "table": "Port", "where": [["name", "==", "tp0"]],
                        "columns": ["name", "interfaces"]}]);
    let results: Json = serde_json::from_str(&ok(run(&server, &["transact", &select.to_string()]))).unwrap();
    let rows = results[0]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{results}");
    assert_eq!(rows[0]["name"], "tp0");
    assert_eq!(rows[0]["interfaces"], json!(["uuid", results_uuid(&server, "Interface", "tp0")]));
    // And ovs-vsctl sees the same thing.
    assert_eq!(server.vsctl(&["list-ports", "tbr0"]).trim(), "tp0");
}

/// The UUID of a row found by name, through ovs-vsctl.
fn results_uuid(server: &OvsdbServer, table: &str, name: &str) -> String {
    server.vsctl(&["--columns=_uuid", "--bare", "find", table, &format!("name={name}")]).trim().to_owned()
}

#[test]
fn failing_transact_exits_non_zero_with_the_error() {
    let server = OvsdbServer::start();
    // A Port without its required interface: the commit fails.
    let bad_commit = json!(["Open_vSwitch", {"op": "insert", "table": "Port", "row": {"name": "lonely"}}]);
    let o = run(&server, &["transact", &bad_commit.to_string()]);
    let err = fails(o);
    // (ovsdb-server 3.1 fills the missing min-1 reference with the all-zero UUID and then
    // reports that as dangling.)
    assert!(err.contains("failed at commit: referential integrity violation"), "{err}");

    // An operation that fails: its index, name and table are named, with the server's details.
    let bad_op = json!(["Open_vSwitch",
        {"op": "select", "table": "Bridge", "where": []},
        {"op": "insert", "table": "Bridge", "row": {"name": 42}}]);
    let o = run(&server, &["transact", &bad_op.to_string()]);
    // The results are still printed (the first operation's and the error object).
    let printed: Json = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(printed[1]["error"].is_string(), "{printed}");
    let err = fails(o);
    assert!(err.contains("operation 1 (insert on Bridge)") && err.contains("syntax error"), "{err}");

    // A JSON-RPC level refusal (unknown database).
    let err = fails(run(&server, &["transact", r#"["No_Such_Db", {"op": "comment", "comment": "x"}]"#]));
    assert!(err.contains("No_Such_Db") || err.contains("unknown database"), "{err}");
    // Nothing was committed.
    assert_eq!(server.vsctl(&["--columns=name", "--bare", "list", "Port"]).trim(), "");
}

#[test]
fn invalid_json_exits_non_zero_with_a_clear_message() {
    let server = OvsdbServer::start();
    for (input, want) in [
        (r#"["Open_vSwitch", {"op": "#, "invalid JSON"),
        (r#"{"op": "select"}"#, "not an array"),
        (r#"[{"op": "select"}]"#, "database name"),
        (r#"["Open_vSwitch", "select"]"#, "operation 0 is not a JSON object"),
    ] {
        let err = fails(run(&server, &["transact", input]));
        assert!(err.contains(want) && err.contains("RFC 7047 params array"), "{input}: {err}");
    }
}

#[test]
fn bad_remote_and_missing_socket_fail_clearly() {
    let err = fails(Command::new(tool()).args(["--db", "/no/prefix", "list-dbs"]).output().unwrap());
    assert!(err.contains("bad OVSDB remote"), "{err}");
    let err = fails(Command::new(tool()).args(["--db", "unix:/nonexistent/db.sock", "list-dbs"]).output().unwrap());
    assert!(err.contains("/nonexistent/db.sock") && err.contains("No such file"), "{err}");
    // The source is not printed twice.
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}

/// A running `ovsdb-tool monitor` whose stdout lines arrive on a channel; killed on drop.
struct Monitor {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Monitor {
    fn start(server: &OvsdbServer, args: &[&str]) -> Self {
        let mut child = command(server, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Monitor { child, lines }
    }

    #[track_caller]
    fn next(&mut self, what: &str) -> Json {
        match self.lines.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")),
            Err(_) => {
                let _ = self.child.kill();
                let out = self.child.wait_with_output_ref();
                panic!("no monitor line within 10 s waiting for {what}; stderr:\n{out}")
            }
        }
    }
}

trait StderrOf {
    fn wait_with_output_ref(&mut self) -> String;
}

impl StderrOf for Child {
    fn wait_with_output_ref(&mut self) -> String {
        use std::io::Read;
        let _ = self.wait();
        let mut s = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn monitor_prints_initial_rows_then_changes() {
    let server = OvsdbServer::start();
    server.vsctl(&["add-br", "mbr0"]);
    let mut m = Monitor::start(&server, &["monitor", "Open_vSwitch", "Bridge", "name", "external_ids"]);
    let initial = m.next("the initial rows");
    let rows = initial["Bridge"].as_object().expect("initial Bridge rows");
    assert_eq!(rows.len(), 1, "{initial}");
    let (uuid, row) = rows.iter().next().unwrap();
    assert_eq!(row["initial"]["name"], "mbr0", "{initial}");

    server.vsctl(&["add-br", "mbr1"]);
    let insert = m.next("the insert of mbr1");
    let (_, row) = insert["Bridge"].as_object().unwrap().iter().next().unwrap();
    assert_eq!(row["insert"]["name"], "mbr1", "{insert}");

    server.vsctl(&["br-set-external-id", "mbr0", "k", "v"]);
    let modify = m.next("the modify of mbr0");
    assert_eq!(modify["Bridge"][uuid]["modify"]["external_ids"], json!(["map", [["k", "v"]]]), "{modify}");

    // A change to a column that is not monitored prints nothing; the next line is the delete.
    server.vsctl(&["set", "Bridge", "mbr0", "stp_enable=true"]);
    server.vsctl(&["del-br", "mbr0"]);
    let delete = m.next("the delete of mbr0");
    assert!(delete["Bridge"][uuid].as_object().unwrap().contains_key("delete"), "{delete}");
}

#[test]
fn monitor_of_unknown_table_or_column_fails() {
    let server = OvsdbServer::start();
    let err = fails(run(&server, &["monitor", "Open_vSwitch", "Nope"]));
    assert!(err.contains("table 'Nope' does not exist"), "{err}");
    let err = fails(run(&server, &["monitor", "Open_vSwitch", "Bridge", "nope"]));
    assert!(err.contains("no column 'nope'"), "{err}");
}

#[test]
fn dump_prints_the_open_vswitch_row() {
    let server = OvsdbServer::start();
    server.vsctl(&["set", "Open_vSwitch", ".", "external_ids:dumped=yes"]);
    let root = server.vsctl(&["--columns=_uuid", "--bare", "list", "Open_vSwitch"]).trim().to_owned();

    let text = ok(run(&server, &["dump", "Open_vSwitch", "Open_vSwitch"]));
    assert!(text.starts_with("Open_vSwitch table (1 row)"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("_uuid") && l.ends_with(&root)), "{text}");
    assert!(text.lines().any(|l| l.starts_with("external_ids") && l.contains(r#"{"dumped"="yes"}"#)), "{text}");

    let all: Json = serde_json::from_str(&ok(run(&server, &["dump", "Open_vSwitch", "--json"]))).unwrap();
    let rows = all["Open_vSwitch"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{all}");
    assert_eq!(rows[0]["_uuid"], json!(["uuid", root]));
    assert_eq!(rows[0]["external_ids"], json!(["map", [["dumped", "yes"]]]));
    assert!(all["Bridge"].is_array() && all["Interface"].is_array(), "every table is dumped");

    let err = fails(run(&server, &["dump", "Open_vSwitch", "Nope"]));
    assert!(err.contains("table 'Nope' does not exist"), "{err}");
}
