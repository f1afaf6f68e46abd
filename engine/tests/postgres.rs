//! The Postgres port, with real clients: Debian's psql and PyPI's psycopg read live views and
//! the warehouse, bind parameters, run the queries a Grafana panel sends, subscribe, change the
//! pipeline; tokens and roles hold there as on HTTP; TLS verifies with `sslmode=verify-full`.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::tls::make_certificates;
use common::{Engine, PIPELINE, create_token, start_engine_with};

/// The pipeline of `common`, with one-minute windows that a Parquet sink writes.
fn pipeline() -> String {
    format!(
        "{PIPELINE}
        CREATE MATERIALIZED VIEW zone_minute AS
          SELECT zone, window_start, count(*) AS n, avg(temp_c) AS temp_avg
          FROM TUMBLE(readings, ts, INTERVAL '1 minute') GROUP BY zone, window_start;
        CREATE SINK zone_minute_wh FROM zone_minute
          WITH (connector = 'parquet', path = 'warehouse/zone_minute', rollover = '1 second');"
    )
}

/// `psql -At` with `sql`; `conninfo` adds to the host and port.
fn psql(address: &str, conninfo: &str, password: Option<&str>, sql: &str) -> Output {
    let (host, port) = address.rsplit_once(':').unwrap();
    let mut command = Command::new("timeout");
    command
        .args([
            "20",
            "psql",
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "VERBOSITY=verbose",
        ])
        .arg(format!(
            "host={host} port={port} user=tester dbname=vibelux connect_timeout=5 {conninfo}"
        ))
        .args(["-c", sql])
        .env_remove("PGPASSWORD");
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    command.output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `sql` until its output satisfies `done` (views fill as the simulation runs).
fn psql_until(address: &str, sql: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let output = psql(address, "", None, sql);
        let answer = text(&output);
        if output.status.success() && done(&answer) {
            return answer;
        }
        assert!(Instant::now() < deadline, "{sql}: last answer {answer}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn start(extra: &[&str]) -> (Engine, String) {
    let mut args = vec!["--pg", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let engine = start_engine_with(&pipeline(), &args);
    let address = engine.pg_address();
    (engine, address)
}

#[test]
fn psql_reads_views_and_the_warehouse_and_changes_the_pipeline() {
    let (_engine, address) = start(&[]);
    let zones = psql_until(
        &address,
        "SELECT zone, n FROM zone_stats ORDER BY zone",
        |answer| answer.lines().count() == 4,
    );
    assert!(zones.starts_with("r01-z01|"), "{zones}");

    // The warehouse, once the sink has committed: the same windows the view closed.
    let rows = psql_until(
        &address,
        "SELECT count(*) FROM warehouse.zone_minute",
        |answer| answer.trim().parse::<u64>().is_ok_and(|n| n > 0),
    );
    assert!(rows.trim().parse::<u64>().unwrap() > 0);
    let typed = psql(
        &address,
        "",
        None,
        "SELECT min(window_start) IS NOT NULL, sum(n) > 0 FROM zone_minute",
    );
    assert!(typed.status.success(), "{}", text(&typed));
    assert!(text(&typed).contains("t|t"), "{}", text(&typed));

    // SHOW and DDL work as over POST /v1/sql.
    let views = psql(&address, "", None, "SHOW VIEWS");
    assert!(
        text(&views).contains("zone_minute|true|windowed"),
        "{}",
        text(&views)
    );
    let created = psql(
        &address,
        "",
        None,
        "CREATE MATERIALIZED VIEW warm AS SELECT zone, temp_max FROM zone_stats WHERE temp_max > 0",
    );
    assert!(created.status.success(), "{}", text(&created));
    assert!(
        text(&created).contains("CREATE MATERIALIZED VIEW"),
        "{}",
        text(&created)
    );
    psql_until(&address, "SELECT count(*) FROM warm", |answer| {
        answer.trim() != "0"
    });

    // Several statements in one message, as `psql -c` sends them: each answers.
    let two = psql(
        &address,
        "",
        None,
        "SELECT count(*) FROM zone_stats; SHOW VIEWS",
    );
    assert!(two.status.success(), "{}", text(&two));
    assert!(
        text(&two).starts_with("4\n") && text(&two).contains("zone_stats|true"),
        "{}",
        text(&two)
    );

    // Errors name the problem, with the SQLSTATE a client can act on.
    let missing = psql(&address, "", None, "SELECT * FROM zone_stat");
    assert!(!missing.status.success());
    assert!(text(&missing).contains("42P01"), "{}", text(&missing));
    assert!(text(&missing).contains("zone_stat"), "{}", text(&missing));
    let wrong = psql(
        &address,
        "",
        None,
        "CREATE VIEW broken AS SELECT nope FROM readings",
    );
    assert!(text(&wrong).contains("nope"), "{}", text(&wrong));

    // `COPY (SUBSCRIBE …) TO STDOUT`: the snapshot, as tab-separated lines.
    let copied = Command::new("timeout")
        .args(["3", "psql", "-X"])
        .arg(format!(
            "host=127.0.0.1 port={} user=tester",
            address.rsplit_once(':').unwrap().1
        ))
        .args(["-c", "COPY (SUBSCRIBE zone_stats) TO STDOUT"])
        .output()
        .unwrap();
    // psql prints COPY rows as they come but buffers its output to a pipe: the run is cut
    // by `timeout` and its buffer is lost, unless the snapshot filled it. Read by psycopg
    // below instead; here the statement must at least be accepted.
    assert!(
        !String::from_utf8_lossy(&copied.stderr).contains("ERROR"),
        "{}",
        text(&copied)
    );
}

/// A psycopg session: parameters, the queries a Grafana panel sends, a streamed subscription
/// and its COPY form. Prints what it found as `key=value` lines.
const PSYCOPG: &str = r#"
import datetime, os, sys, time
import psycopg

dsn = os.environ["DSN"]
with psycopg.connect(dsn) as conn:  # not autocommit: psycopg sends BEGIN first
    cur = conn.cursor()
    cur.execute("SELECT zone, n, temp_max FROM zone_stats WHERE n >= %s AND zone = %s", (1, "r01-z02"))
    row = cur.fetchone()
    print("param_row", row[0], type(row[1]).__name__, type(row[2]).__name__)
    print("types", ",".join(str(d.type_code) for d in cur.description))
    since = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=365)
    cur.execute("SELECT count(*) FROM zone_minute WHERE window_start > %s", (since,))
    print("since", cur.fetchone()[0])
    # Grafana's $__timeFilter and $__timeGroup, expanded as its data source sends them.
    cur.execute('''SELECT floor(extract(epoch from window_start)/60)*60 AS "time", avg(temp_avg) AS temp
                   FROM zone_minute
                   WHERE window_start BETWEEN '2000-01-01T00:00:00Z' AND '2100-01-01T00:00:00Z'
                   GROUP BY 1 ORDER BY 1''')
    rows = cur.fetchall()
    print("grafana", len(rows), all(rows[i][0] < rows[i + 1][0] for i in range(len(rows) - 1)))
    cur.execute("SELECT window_start FROM zone_minute LIMIT 1")
    print("timestamp", type(cur.fetchone()[0]).__name__)

conn = psycopg.connect(dsn, autocommit=True)
started = time.time()
seen = []
for row in conn.cursor().stream("SUBSCRIBE zone_minute WITH (SNAPSHOT = false, PROGRESS = true)"):
    seen.append(row)
    if any(not r[1] for r in seen) and any(r[1] for r in seen):
        break
changes = [r for r in seen if not r[1]]
print("stream", len(changes) > 0, all(r[2] in (1, -1) for r in changes), len(changes[0]))
conn.close()

conn = psycopg.connect(dsn, autocommit=True)
lines = []
try:
    with conn.cursor().copy("COPY (SUBSCRIBE zone_stats) TO STDOUT") as copy:
        for row in copy.rows():
            lines.append(row)
            if len(lines) == 4:
                conn.cancel_safe()  # a subscription ends when its client cancels it
except psycopg.errors.QueryCanceled:
    print("cancelled", True)
print("copy", len(lines) >= 4, lines[0][1])
conn.close()
"#;

#[test]
fn psycopg_binds_parameters_runs_grafana_queries_and_subscribes() {
    let (_engine, address) = start(&[]);
    psql_until(&address, "SELECT count(*) FROM zone_minute", |answer| {
        answer.trim().parse::<u64>().is_ok_and(|n| n >= 8)
    });
    let (host, port) = address.rsplit_once(':').unwrap();
    let output = Command::new("timeout")
        .args(["60", "python3", "-c", PSYCOPG])
        .env(
            "DSN",
            format!("host={host} port={port} user=tester dbname=vibelux connect_timeout=5"),
        )
        .output()
        .unwrap();
    let printed = text(&output);
    assert!(output.status.success(), "{printed}");
    let line = |key: &str| {
        printed
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} in {printed}"))
            .to_string()
    };
    assert_eq!(line("param_row"), "r01-z02 int float");
    // text, int8, float8
    assert_eq!(line("types"), "25,20,701");
    assert_ne!(line("since"), "0");
    assert!(line("grafana").ends_with(" True"), "{printed}");
    assert_eq!(line("timestamp"), "datetime");
    // Changes with diffs ±1, each row: mz_timestamp, mz_progressed, mz_diff and 4 columns.
    assert_eq!(line("stream"), "True True 7");
    assert_eq!(line("copy"), "True 1");
    assert_eq!(line("cancelled"), "True");
}

#[test]
fn tokens_and_roles_hold_on_the_postgres_port() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    let secret = |name: &str, role: &str| create_token(&tokens, name, role);
    let (viewer, engineer, admin) = (
        secret("vera", "viewer"),
        secret("eli", "engineer"),
        secret("ada", "admin"),
    );
    let tokens_arg = tokens.to_str().unwrap().to_string();
    let (engine, address) = start(&["--auth", &tokens_arg]);
    let run = |password: Option<&str>, sql: &str| psql(&address, "", password, sql);

    // No password, a wrong one: refused before any statement.
    let none = run(None, "SELECT 1");
    assert!(!none.status.success());
    let wrong = run(Some("not-a-token"), "SELECT 1");
    assert!(!wrong.status.success());
    assert!(
        text(&wrong).contains("not a valid token"),
        "{}",
        text(&wrong)
    );

    // Each role: reading is everyone's; changing the pipeline is an engineer's.
    let create = |n: usize| format!("CREATE MATERIALIZED VIEW v{n} AS SELECT zone FROM zone_stats");
    for (n, (token, may_change)) in [(&viewer, false), (&engineer, true), (&admin, true)]
        .into_iter()
        .enumerate()
    {
        let read = run(Some(token), "SELECT count(*) FROM zone_stats");
        assert!(read.status.success(), "{}", text(&read));
        let show = run(Some(token), "SHOW VIEWS");
        assert!(show.status.success(), "{}", text(&show));
        let changed = run(Some(token), &create(n));
        assert_eq!(changed.status.success(), may_change, "{}", text(&changed));
        if !may_change {
            assert!(text(&changed).contains("42501"), "{}", text(&changed));
            assert!(text(&changed).contains("engineer"), "{}", text(&changed));
        }
    }

    // A change hidden behind a SHOW in the same message is the change's, and refused.
    let hidden = run(
        Some(&viewer),
        "SHOW VIEWS; CREATE MATERIALIZED VIEW hidden AS SELECT zone FROM zone_stats",
    );
    assert!(text(&hidden).contains("42501"), "{}", text(&hidden));
    // DataFusion's own DDL is not served to anyone: a query reads.
    let into = run(Some(&admin), "SELECT zone INTO copied FROM zone_stats");
    assert!(!into.status.success(), "{}", text(&into));
    let views = text(&run(Some(&admin), "SHOW VIEWS"));
    assert!(
        !views.contains("hidden") && !views.contains("copied"),
        "{views}"
    );

    // The audit trail names who logged in and who changed what, from the Postgres port.
    let trail = std::fs::read_to_string(engine.dir.path().join("pipeline.audit.jsonl")).unwrap();
    assert!(
        trail.contains("\"action\":\"postgres login\"")
            && trail.contains("\"outcome\":\"refused\""),
        "{trail}"
    );
    assert!(
        trail.lines().any(|line| line.contains("\"actor\":\"eli\"")
            && line.contains("CREATE MATERIALIZED VIEW v1")),
        "{trail}"
    );
}

#[test]
fn the_postgres_port_speaks_tls_that_psql_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_certificates(dir.path());
    let cert = dir.path().join("server.pem");
    let key = dir.path().join("server.key");
    let (_engine, address) = start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let verified = psql(
        &address,
        &format!("sslmode=verify-full sslrootcert={}", ca.display()),
        None,
        "SELECT count(*) >= 0 FROM zone_stats",
    );
    assert!(verified.status.success(), "{}", text(&verified));
    assert_eq!(String::from_utf8_lossy(&verified.stdout).trim(), "t");

    // A client that trusts another CA refuses the server.
    let other = tempfile::tempdir().unwrap();
    let other_ca = make_certificates(other.path());
    let refused = psql(
        &address,
        &format!("sslmode=verify-full sslrootcert={}", other_ca.display()),
        None,
        "SELECT 1",
    );
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains("certificate"), "{}", text(&refused));
}

#[test]
fn a_malformed_message_ends_only_its_own_connection() {
    use std::io::{Read, Write};
    let (engine, address) = start(&[]);
    let mut socket = std::net::TcpStream::connect(&address).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // Startup (protocol 3.0, user tester), then wait for ReadyForQuery.
    let parameters = b"user\0tester\0\0";
    let mut startup = ((8 + parameters.len()) as i32).to_be_bytes().to_vec();
    startup.extend_from_slice(&196_608i32.to_be_bytes());
    startup.extend_from_slice(parameters);
    socket.write_all(&startup).unwrap();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    while !received.windows(6).any(|w| w == b"Z\0\0\0\x05I") {
        let read = socket.read(&mut chunk).unwrap();
        assert!(read > 0, "the server closed during startup");
        received.extend_from_slice(&chunk[..read]);
    }
    // A Bind whose parameter claims 1,000 bytes it does not have: pgwire's decoder panics on
    // it (found by fuzzing, fuzz/regressions/postgres/); the connection's task ends.
    let bind = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/regressions/postgres/bind-past-its-end.bin"),
    )
    .unwrap();
    socket.write_all(&bind[1..]).unwrap();
    let ended = matches!(socket.read(&mut chunk), Ok(0) | Err(_));
    assert!(ended, "the connection is closed");
    // Everyone else is served as before.
    let after = psql(&address, "", None, "SELECT count(*) FROM zone_stats");
    assert!(after.status.success(), "{}", text(&after));
    drop(engine);
}
