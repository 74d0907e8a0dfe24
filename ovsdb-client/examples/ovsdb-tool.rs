//! A small OVSDB command-line client built on `ovsdb-client`.
//!
//! ```text
//! ovsdb-tool [--db unix:/var/run/openvswitch/db.sock] list-dbs
//! ovsdb-tool get-schema Open_vSwitch
//! ovsdb-tool transact '["Open_vSwitch", {"op": "select", "table": "Bridge", "where": []}]'
//! ovsdb-tool monitor Open_vSwitch Interface name ofport
//! ovsdb-tool dump Open_vSwitch [Bridge] [--json]
//! ```
//!
//! Errors go to stderr as `error: ...` and the exit status is 1.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use ovsdb_client::{
    Atom, Connection, ConnectionOptions, MonitorRequests, Remote, Row, RowUpdate, TableUpdates, Transaction, Value,
};
use serde_json::{json, Value as Json};

#[derive(Parser, Debug)]
#[command(name = "ovsdb-tool", about = "Talk to an OVSDB server (RFC 7047)")]
struct Cli {
    /// Where the server listens: unix:PATH or tcp:HOST:PORT.
    #[arg(long, global = true, env = "OVSDB_REMOTE", default_value = "unix:/var/run/openvswitch/db.sock")]
    db: String,
    /// Seconds to wait for each reply.
    #[arg(long, global = true, default_value_t = 30)]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Lists the databases, one per line.
    ListDbs,
    /// Prints a database's schema as JSON.
    GetSchema {
        /// Database name, e.g. Open_vSwitch.
        database: String,
    },
    /// Runs a transaction given as the RFC 7047 params array: '["DB", {"op": ...}, ...]'.
    /// Prints the results; exits 1 if any operation (or the commit) failed.
    Transact {
        /// The params array as JSON.
        json: String,
    },
    /// Prints the table's rows, then every change, one JSON object per line, until killed.
    Monitor {
        /// Database name.
        database: String,
        /// Table to monitor.
        table: String,
        /// Columns to monitor (all when none given).
        columns: Vec<String>,
    },
    /// Prints every row of every table (or of one table).
    Dump {
        /// Database name.
        database: String,
        /// Only this table.
        table: Option<String>,
        /// JSON (`{"TABLE": [row, ...]}`) instead of readable records.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by ": ", skipping a cause whose text the message before it
/// already includes (some errors print their source in their own message).
fn chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

async fn run(cli: Cli) -> Result<()> {
    let remote: Remote = cli.db.parse()?;
    let options = ConnectionOptions { request_timeout: Duration::from_secs(cli.timeout), ..Default::default() };
    // Parse the transaction before connecting, so bad input is reported as such.
    let transact_params = match &cli.command {
        Command::Transact { json } => Some(parse_transact(json)?),
        _ => None,
    };
    let conn = Connection::connect_with(&remote, options).await?;
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::ListDbs => {
            for db in conn.list_dbs().await.context("list_dbs")? {
                writeln!(out, "{db}")?;
            }
        }
        Command::GetSchema { database } => {
            let schema = conn
                .call("get_schema", json!([database]))
                .await
                .with_context(|| format!("getting the schema of '{database}'"))?;
            writeln!(out, "{}", serde_json::to_string_pretty(&schema)?)?;
        }
        Command::Transact { .. } => {
            let params = transact_params.expect("parsed above");
            let results = conn.call("transact", params.clone()).await.context("transact")?;
            writeln!(out, "{}", serde_json::to_string_pretty(&results)?)?;
            out.flush()?;
            check_results(&params, &results)?;
        }
        Command::Monitor { database, table, columns } => monitor(&conn, &mut out, &database, &table, &columns).await?,
        Command::Dump { database, table, json } => dump(&conn, &mut out, &database, table.as_deref(), json).await?,
    }
    out.flush()?;
    Ok(())
}

/// The `transact` argument: a JSON array of the database name and operation objects.
fn parse_transact(text: &str) -> Result<Json> {
    const SHAPE: &str =
        r#"want the RFC 7047 params array, e.g. '["Open_vSwitch", {"op": "select", "table": "Bridge", "where": []}]'"#;
    let params: Json = serde_json::from_str(text).with_context(|| format!("transact: invalid JSON ({SHAPE})"))?;
    let Some(items) = params.as_array() else { bail!("transact: the JSON is not an array ({SHAPE})") };
    match items.first() {
        Some(Json::String(_)) => {}
        _ => bail!("transact: the first element must be the database name ({SHAPE})"),
    }
    if let Some(i) = items.iter().skip(1).position(|op| !op.is_object()) {
        bail!("transact: operation {i} is not a JSON object ({SHAPE})");
    }
    Ok(params)
}

/// RFC 7047 section 4.1.3: one result per operation, `null` after the first failure, and one
/// extra error object when the commit itself failed.
fn check_results(params: &Json, results: &Json) -> Result<()> {
    let ops = &params.as_array().expect("checked by parse_transact")[1..];
    let Some(results) = results.as_array() else { bail!("transact: the result is not an array: {results}") };
    for (index, r) in results.iter().enumerate() {
        let Some(error) = r.get("error") else { continue };
        let error = error.as_str().map_or_else(|| error.to_string(), str::to_owned);
        let details = match r.get("details").and_then(Json::as_str) {
            Some(d) => format!(": {d}"),
            None => String::new(),
        };
        match ops.get(index) {
            Some(op) => {
                let name = op.get("op").and_then(Json::as_str).unwrap_or("?");
                let on = op.get("table").and_then(Json::as_str).map(|t| format!(" on {t}")).unwrap_or_default();
                bail!("transaction failed: operation {index} ({name}{on}): {error}{details}")
            }
            None => bail!("transaction failed at commit: {error}{details}"),
        }
    }
    if results.len() < ops.len() {
        bail!("transact: {} results for {} operations", results.len(), ops.len());
    }
    Ok(())
}

async fn monitor(
    conn: &Connection,
    out: &mut impl Write,
    database: &str,
    table: &str,
    columns: &[String],
) -> Result<()> {
    let schema = conn.get_schema(database).await.with_context(|| format!("getting the schema of '{database}'"))?;
    let ts = schema.table(table)?;
    for c in columns {
        if ts.column(c).is_none() {
            bail!("table '{table}' has no column '{c}'");
        }
    }
    let requests = MonitorRequests::new().table(table, columns.iter().map(String::as_str));
    let (initial, mut monitor) = match conn.monitor_cond(database, &requests).await {
        Err(e) if e.is_unknown_method() => conn.monitor(database, &requests).await,
        other => other,
    }
    .with_context(|| format!("monitoring {database}.{table}"))?;
    writeln!(out, "{}", updates_json(&initial))?;
    out.flush()?;
    while let Some(event) = monitor.next().await {
        let event = event.context("monitor")?;
        writeln!(out, "{}", updates_json(&event.updates))?;
        out.flush()?;
    }
    bail!("monitor ended: {}", conn.closed().await)
}

/// `{"TABLE": {"UUID": {"initial"|"insert"|"modify"|"delete": ROW}}}`, the `update2` shape.
fn updates_json(updates: &TableUpdates) -> Json {
    let mut tables = serde_json::Map::new();
    for (table, rows) in &updates.tables {
        let mut obj = serde_json::Map::new();
        for (uuid, change) in rows {
            let (kind, body) = match change {
                RowUpdate::Initial(r) => ("initial", r.to_json()),
                RowUpdate::Insert(r) => ("insert", r.to_json()),
                RowUpdate::Modify(r) => ("modify", r.to_json()),
                RowUpdate::Replace(r) => ("replace", r.to_json()),
                RowUpdate::Delete => ("delete", Json::Null),
            };
            obj.insert(uuid.to_string(), json!({ kind: body }));
        }
        tables.insert(table.clone(), Json::Object(obj));
    }
    Json::Object(tables)
}

async fn dump(
    conn: &Connection,
    out: &mut impl Write,
    database: &str,
    only: Option<&str>,
    as_json: bool,
) -> Result<()> {
    let schema = conn.get_schema(database).await.with_context(|| format!("getting the schema of '{database}'"))?;
    let tables: Vec<&str> = match only {
        Some(t) => vec![schema.table(t)?.name.as_str()],
        None => schema.tables.keys().map(String::as_str).collect(),
    };
    let mut tx = Transaction::new(database);
    for t in &tables {
        tx.select(*t, vec![], None);
    }
    let outcome = conn.transact(&tx).await.context("reading the tables")?;
    if as_json {
        let dumped: serde_json::Map<String, Json> = tables
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), Json::Array(outcome.rows(i).iter().map(Row::to_json).collect())))
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&Json::Object(dumped))?)?;
        return Ok(());
    }
    for (i, t) in tables.iter().enumerate() {
        let rows = outcome.rows(i);
        writeln!(out, "{t} table ({} row{})", rows.len(), if rows.len() == 1 { "" } else { "s" })?;
        for row in rows {
            let width = row.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
            // `_uuid` first, as ovs-vsctl list does.
            let uuid = row.get("_uuid").into_iter().map(|v| ("_uuid", v));
            for (column, value) in uuid.chain(row.iter().filter(|(c, _)| *c != "_uuid")) {
                writeln!(out, "{column:<width$} : {}", show(value))?;
            }
            writeln!(out)?;
        }
    }
    Ok(())
}

/// A value the way ovs-vsctl prints it: `[a, b]` for sets, `{k=v}` for maps.
fn show(v: &Value) -> String {
    let atom = |a: &Atom| a.to_string();
    match v {
        Value::Atom(a) => atom(a),
        Value::Set(items) => format!("[{}]", items.iter().map(atom).collect::<Vec<_>>().join(", ")),
        Value::Map(pairs) => {
            format!(
                "{{{}}}",
                pairs.iter().map(|(k, v)| format!("{}={}", atom(k), atom(v))).collect::<Vec<_>>().join(", ")
            )
        }
    }
}
