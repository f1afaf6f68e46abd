//! Who may call a running engine: tokens and roles on every route, and the refusals that keep a
//! page in the operator's browser or a stranger on the network out.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::output::{json_lines, wait_for_lines};
use common::{
    Answer, Engine, PIPELINE, bearer, create_token, request, start_engine, start_engine_with,
};

/// A route, how to call it, and the least role it needs.
struct Route {
    what: &'static str,
    method: &'static str,
    path: &'static str,
    headers: Vec<String>,
    body: Option<String>,
    needs: usize,
}

const ROLES: [&str; 4] = ["viewer", "operator", "engineer", "admin"];

/// A tag map whose one writable register has limits, as sinks added over the API need.
const BOUNDED_TAGS: &str = "[[tag]]
name = \"supply_setpoint\"
register = \"holding\"
address = 1
type = \"int16\"
scale = 0.1
min = 16.0
max = 30.0
";

fn routes(tags: &Path) -> Vec<Route> {
    let sql = "content-type: application/sql".to_string();
    let websocket = vec![
        "Connection: Upgrade".to_string(),
        "Upgrade: websocket".to_string(),
        "Sec-WebSocket-Version: 13".to_string(),
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".to_string(),
    ];
    vec![
        Route {
            what: "list views",
            method: "GET",
            path: "/v1/views",
            headers: vec![],
            body: None,
            needs: 0,
        },
        Route {
            what: "read a view",
            method: "GET",
            path: "/v1/views/zone_stats",
            headers: vec![],
            body: None,
            needs: 0,
        },
        Route {
            what: "subscribe",
            method: "GET",
            path: "/v1/views/zone_stats/subscribe",
            headers: websocket,
            body: None,
            needs: 0,
        },
        Route {
            what: "metrics",
            method: "GET",
            path: "/metrics",
            headers: vec![],
            body: None,
            needs: 0,
        },
        Route {
            what: "acknowledge",
            method: "POST",
            path: "/v1/alarms/hot/acknowledge",
            headers: vec!["content-type: application/json".into()],
            body: Some(r#"{"key": {"zone": "r01-z01"}}"#.into()),
            needs: 1,
        },
        Route {
            what: "create a view",
            method: "POST",
            path: "/v1/sql",
            headers: vec![sql.clone()],
            // Replaced by each caller that may: the name is free again for the next.
            body: Some(
                "CREATE OR REPLACE MATERIALIZED VIEW added AS SELECT zone, n FROM zone_stats"
                    .into(),
            ),
            needs: 2,
        },
        Route {
            what: "create a PLC-writing sink",
            method: "POST",
            path: "/v1/sql",
            headers: vec![sql],
            body: Some(format!(
                "CREATE VIEW commands AS SELECT 'supply_setpoint' AS tag, 24.0 AS value FROM zone_stats;
                 CREATE SINK plc FROM commands WITH (connector = 'modbus', host = '127.0.0.1',
                   port = '1', unit_id = '1', tags = '{}', timeout = '100ms');",
                tags.display()
            )),
            needs: 3,
        },
    ]
}

fn pipeline_with_alarm() -> String {
    format!(
        "{PIPELINE}
         CREATE ALARM hot ON readings PER zone WHEN temp_c > 100 SEVERITY 'critical';
         CREATE SINK hot_out FROM hot WITH (connector = 'file', path = 'hot.jsonl');"
    )
}

/// An engine with tokens from `tokens`, that lets added sinks reach 127.0.0.1; its folder
/// holds `bounded.toml`.
fn guarded_engine(tokens: &Path) -> Engine {
    let engine = start_engine_with(
        &pipeline_with_alarm(),
        &[
            "--auth",
            tokens.to_str().unwrap(),
            "--allow-outbound",
            "127.0.0.1",
        ],
    );
    std::fs::write(engine.dir.path().join("bounded.toml"), BOUNDED_TAGS).unwrap();
    engine
}

fn tag_map() -> PathBuf {
    PathBuf::from("bounded.toml")
}

#[test]
fn every_route_answers_each_role_as_its_least_privilege_says() {
    let keys = tempfile::tempdir().unwrap();
    let file = keys.path().join("tokens.toml");
    let tokens: Vec<String> = ROLES
        .iter()
        .map(|role| create_token(&file, &format!("{role}-token"), role))
        .collect();
    let stored = std::fs::read_to_string(&file).unwrap();
    for token in &tokens {
        assert!(!stored.contains(token.as_str()), "a secret was stored");
    }
    let engine = guarded_engine(&file);
    let address = engine.address.clone();

    // Open to everyone: the dashboard's files, health, the API's description.
    for path in ["/", "/dashboard.js", "/healthz", "/openapi.json"] {
        let answer = request(&address, "GET", path, &[], None);
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
    }

    let mut table = Vec::new();
    for route in routes(&tag_map()) {
        let call = |token: Option<&str>| {
            let mut headers = route.headers.clone();
            if let Some(token) = token {
                headers.push(bearer(token));
            }
            request(
                &address,
                route.method,
                route.path,
                &headers,
                route.body.as_deref(),
            )
        };
        // No token, and a token nobody issued: 401, saying what to send.
        let none = call(None);
        assert_eq!(
            none.status, 401,
            "{} without a token: {}",
            route.what, none.body
        );
        assert!(none.body.contains("Authorization: Bearer"), "{}", none.body);
        let wrong = call(Some(&format!("vlx_{}", "0".repeat(64))));
        assert_eq!(
            wrong.status, 401,
            "{} with a wrong token: {}",
            route.what, wrong.body
        );
        assert!(wrong.body.contains("not known"), "{}", wrong.body);
        for (rank, (role, token)) in ROLES.iter().zip(&tokens).enumerate() {
            let answer = call(Some(token));
            table.push(format!("{} × {role}: {}", route.what, answer.status));
            if rank < route.needs {
                assert_eq!(
                    answer.status, 403,
                    "{} as {role}: {}",
                    route.what, answer.body
                );
                assert!(
                    answer.body.contains(&format!("has the {role} role"))
                        || answer.body.contains("only an admin"),
                    "{} as {role}: {}",
                    route.what,
                    answer.body
                );
            } else {
                assert!(
                    answer.status != 401 && answer.status != 403,
                    "{} as {role} was refused: {} {}",
                    route.what,
                    answer.status,
                    answer.body
                );
            }
        }
    }
    println!("{}", table.join("\n"));

    // What the allowed callers got is what they asked for.
    let viewer = &tokens[0];
    let views = request(&address, "GET", "/v1/views", &[bearer(viewer)], None);
    assert!(views.body.contains("zone_stats"), "{}", views.body);
    let upgrade = request(
        &address,
        "GET",
        &format!("/v1/views/zone_stats/subscribe?access_token={viewer}"),
        &routes(&tag_map())[2].headers,
        None,
    );
    assert_eq!(
        upgrade.status, 101,
        "a browser's token in the query: {}",
        upgrade.body
    );
}

#[test]
fn a_token_acts_in_its_own_name_and_a_shelve_is_bounded() {
    let keys = tempfile::tempdir().unwrap();
    let file = keys.path().join("tokens.toml");
    let maria = create_token(&file, "maria", "operator");
    let engine = start_engine_with(
        &pipeline_with_alarm(),
        &["--auth", file.to_str().unwrap(), "--max-shelve", "8h"],
    );
    let json = "content-type: application/json".to_string();
    let impersonating = request(
        &engine.address,
        "POST",
        "/v1/alarms/hot/acknowledge",
        &[json.clone(), bearer(&maria)],
        Some(r#"{"key": {"zone": "r01-z01"}, "by": "the-boss"}"#),
    );
    assert_eq!(impersonating.status, 403, "{}", impersonating.body);
    assert!(
        impersonating.body.contains("cannot act as `the-boss`"),
        "{}",
        impersonating.body
    );
    let too_long = request(
        &engine.address,
        "POST",
        "/v1/alarms/hot/shelve",
        &[json.clone(), bearer(&maria)],
        Some(r#"{"key": {"zone": "r01-z01"}, "for": "30d"}"#),
    );
    assert_eq!(too_long.status, 400, "{}", too_long.body);
    assert!(too_long.body.contains("8h"), "{}", too_long.body);
    // In her own name, it reaches the alarm (which has no such instance: nothing is hot).
    let own = request(
        &engine.address,
        "POST",
        "/v1/alarms/hot/acknowledge",
        &[json, bearer(&maria)],
        Some(r#"{"key": {"zone": "r01-z01"}, "by": "maria"}"#),
    );
    assert_eq!(own.status, 404, "{}", own.body);
}

#[test]
fn a_token_added_or_revoked_while_running_counts_at_once() {
    let keys = tempfile::tempdir().unwrap();
    let file = keys.path().join("tokens.toml");
    let first = create_token(&file, "first", "viewer");
    let engine = guarded_engine(&file);
    let second = create_token(&file, "second", "viewer");
    let read = |token: &str| request(&engine.address, "GET", "/v1/views", &[bearer(token)], None);
    assert_eq!(read(&second).status, 200);
    // Revoked: its entry deleted from the file.
    let text = std::fs::read_to_string(&file).unwrap();
    let kept: Vec<&str> = text
        .split("[[token]]")
        .filter(|entry| !entry.contains("\"first\""))
        .collect();
    std::fs::write(&file, kept.join("[[token]]")).unwrap();
    assert_eq!(read(&first).status, 401);
    assert_eq!(read(&second).status, 200);
}

#[test]
fn pages_of_other_sites_and_other_names_for_this_server_are_refused() {
    let engine = start_engine(PIPELINE);
    let address = engine.address.clone();
    let port = address.rsplit(':').next().unwrap();
    let view = "CREATE MATERIALIZED VIEW added AS SELECT zone FROM zone_stats";
    // A page elsewhere posting the statements (CSRF): refused even with a good content type.
    let cross_site = request(
        &address,
        "POST",
        "/v1/sql",
        &[
            "content-type: application/sql".into(),
            "Origin: http://evil.example".into(),
        ],
        Some(view),
    );
    assert_eq!(cross_site.status, 403, "{}", cross_site.body);
    assert!(
        cross_site.body.contains("--allow-origin"),
        "{}",
        cross_site.body
    );
    // A form's or text/plain's content type, which any page may post without asking.
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let form = request(
            &address,
            "POST",
            "/v1/sql",
            &[format!("content-type: {content_type}")],
            Some(view),
        );
        assert_eq!(form.status, 415, "{content_type}: {}", form.body);
    }
    // DNS rebinding: the attacker's name pointed at 127.0.0.1.
    let rebound = request(
        &address,
        "GET",
        "/v1/views",
        &[format!("Host: rebind.evil.example:{port}")],
        None,
    );
    assert_eq!(rebound.status, 403, "{}", rebound.body);
    assert!(rebound.body.contains("--allow-host"), "{}", rebound.body);
    // A WebSocket from another site's page: the browser would allow it, the server does not.
    let socket = request(
        &address,
        "GET",
        "/v1/views/zone_stats/subscribe",
        &[
            "Connection: Upgrade".into(),
            "Upgrade: websocket".into(),
            "Sec-WebSocket-Version: 13".into(),
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".into(),
            "Origin: http://evil.example".into(),
        ],
        None,
    );
    assert_eq!(socket.status, 403, "{}", socket.body);
    // This server's own page, and JSON, are fine.
    let own = request(
        &address,
        "POST",
        "/v1/sql",
        &[
            "content-type: application/json".into(),
            format!("Origin: http://{address}"),
        ],
        Some(&format!("{{\"sql\": \"{view}\"}}")),
    );
    assert_eq!(own.status, 200, "{}", own.body);
    // A body beyond the limit (curl reads it from a file: `@path`).
    let huge = engine.dir.path().join("huge.sql");
    std::fs::write(&huge, format!("-- {}\n{view}", "x".repeat(2 << 20))).unwrap();
    let big = request(
        &address,
        "POST",
        "/v1/sql",
        &["content-type: application/sql".into()],
        Some(&format!("@{}", huge.display())),
    );
    assert_eq!(big.status, 413, "{}", big.body);
}

#[test]
fn serving_beyond_loopback_without_tokens_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.sql"), PIPELINE).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .current_dir(dir.path())
        .args(["run", "pipeline.sql", "--http", "0.0.0.0:0", "--for", "5s"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("without tokens"), "{stderr}");
    assert!(stderr.contains("--auth FILE"), "{stderr}");
    // Nothing started: no state was written.
    assert!(!dir.path().join("pipeline.state").exists());
}

/// Posts `sql` to an engine without tokens; returns the answer.
fn post_statements(engine: &Engine, sql: &str) -> Answer {
    request(
        &engine.address,
        "POST",
        "/v1/sql",
        &["content-type: application/sql".into()],
        Some(sql),
    )
}

#[test]
fn sinks_added_over_the_api_keep_to_the_data_directory_and_the_allowed_hosts() {
    let engine = start_engine_with(PIPELINE, &["--allow-outbound", "127.0.0.1:9"]);
    let outside = tempfile::tempdir().unwrap();
    let file_sink = |name: &str, path: &str| {
        format!("CREATE SINK {name} FROM zone_stats WITH (connector = 'file', path = '{path}')")
    };
    let refused = |sql: String, expected: &str| {
        let answer = post_statements(&engine, &sql);
        assert_eq!(answer.status, 403, "{sql}: {}", answer.body);
        assert!(answer.body.contains(expected), "{sql}: {}", answer.body);
    };
    refused(file_sink("up", "../up.jsonl"), "`..` is not allowed");
    let elsewhere = outside.path().join("x.jsonl");
    refused(file_sink("abs", elsewhere.to_str().unwrap()), "--data-dir");
    // A symlink inside the data directory that leads out of it.
    std::os::unix::fs::symlink(outside.path(), engine.dir.path().join("out-link")).unwrap();
    refused(file_sink("linked", "out-link/x.jsonl"), "leads to");
    refused(
        "CREATE SINK hook FROM zone_stats WITH (connector = 'webhook', url = 'http://10.1.2.3:8080/x')"
            .into(),
        "--allow-outbound",
    );
    refused(
        "CREATE SINK published FROM zone_stats WITH (connector = 'mqtt', url = 'mqtt://127.0.0.1:9', topic = 't', audit = '/tmp/a.jsonl')"
            .into(),
        "/tmp/a.jsonl",
    );
    // Nothing refused was written.
    assert!(!elsewhere.exists());
    assert!(!outside.path().join("x.jsonl").exists());

    // Inside, and to an allowed host: accepted.
    let inside = post_statements(&engine, &file_sink("kept", "out/kept.jsonl"));
    assert_eq!(inside.status, 200, "{}", inside.body);
    let hook = post_statements(
        &engine,
        "CREATE SINK hook FROM zone_stats WITH (connector = 'webhook', url = 'http://127.0.0.1:9/x')",
    );
    assert_eq!(hook.status, 200, "{}", hook.body);
}

#[test]
fn plc_sinks_added_over_the_api_need_limits_from_a_file() {
    let engine = start_engine_with(PIPELINE, &["--allow-outbound", "127.0.0.1"]);
    let dir = engine.dir.path();
    std::fs::write(dir.join("bounded.toml"), BOUNDED_TAGS).unwrap();
    std::fs::write(
        dir.join("unbounded.toml"),
        BOUNDED_TAGS.replace("min = 16.0\n", ""),
    )
    .unwrap();
    let plc = |name: &str, tags: &str| {
        format!(
            "CREATE VIEW {name}_commands AS SELECT 'supply_setpoint' AS tag, 24.0 AS value FROM zone_stats;
             CREATE SINK {name} FROM {name}_commands WITH (connector = 'modbus', host = '127.0.0.1',
               port = '1', tags = '{tags}', timeout = '100ms')"
        )
    };
    let unbounded = post_statements(&engine, &plc("a", "unbounded.toml"));
    assert_eq!(unbounded.status, 403, "{}", unbounded.body);
    assert!(
        unbounded.body.contains("supply_setpoint"),
        "{}",
        unbounded.body
    );
    // The same map inline (SQL quotes doubled).
    let inline = post_statements(&engine, &plc("b", &BOUNDED_TAGS.replace('\'', "''")));
    assert_eq!(inline.status, 403, "{}", inline.body);
    assert!(inline.body.contains("inline"), "{}", inline.body);
    let bounded = post_statements(&engine, &plc("c", "bounded.toml"));
    assert_eq!(bounded.status, 200, "{}", bounded.body);
}

#[test]
fn the_api_adds_a_bounded_number_of_views_and_sinks() {
    let engine = start_engine_with(PIPELINE, &["--max-api-objects", "2"]);
    let view = |name: &str| {
        post_statements(
            &engine,
            &format!("CREATE MATERIALIZED VIEW {name} AS SELECT zone FROM zone_stats"),
        )
    };
    assert_eq!(view("one").status, 200);
    assert_eq!(view("two").status, 200);
    let third = view("three");
    assert_eq!(third.status, 403, "{}", third.body);
    assert!(third.body.contains("at most 2"), "{}", third.body);
    // Dropping one makes room.
    assert_eq!(post_statements(&engine, "DROP VIEW one").status, 200);
    assert_eq!(view("three").status, 200);
}

#[test]
fn subscriptions_per_token_are_bounded_and_refusals_are_counted() {
    let engine = start_engine_with(PIPELINE, &["--max-subscribers", "1"]);
    let address = engine.address.clone();
    let upgrade: Vec<String> = vec![
        "Connection: Upgrade".into(),
        "Upgrade: websocket".into(),
        "Sec-WebSocket-Version: 13".into(),
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".into(),
    ];
    let path = "/v1/views/zone_stats/subscribe";
    // The first holds its subscription for curl's three seconds.
    let holder = {
        let (address, upgrade) = (address.clone(), upgrade.clone());
        std::thread::spawn(move || request(&address, "GET", path, &upgrade, None))
    };
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let second = request(&address, "GET", path, &upgrade, None);
    assert_eq!(second.status, 429, "{}", second.body);
    assert!(second.body.contains("--max-subscribers"), "{}", second.body);
    assert_eq!(holder.join().unwrap().status, 101);
    // Closed, its seat is free again.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(request(&address, "GET", path, &upgrade, None).status, 101);

    let metrics = request(&address, "GET", "/metrics", &[], None).body;
    assert!(
        metrics.contains("vibelux_http_refusals_total{reason=\"subscribers\"} 1"),
        "{metrics}"
    );
}

#[test]
fn the_audit_trail_records_changes_and_refusals_and_is_a_relation_that_survives_a_crash() {
    let keys = tempfile::tempdir().unwrap();
    let file = keys.path().join("tokens.toml");
    let maria = create_token(&file, "maria", "operator");
    let ci = create_token(&file, "ci", "engineer");
    let mut engine = start_engine_with(
        &format!(
            "{}
             CREATE SOURCE audit WITH (connector = 'audit');
             CREATE SINK audit_out FROM audit WITH (connector = 'file', path = 'audit_out.jsonl');
             CREATE MATERIALIZED VIEW refused AS
               SELECT actor, count(*) AS n FROM audit WHERE outcome = 'refused' GROUP BY actor;
             CREATE VIEW callers AS SELECT ts, actor AS caller, outcome FROM audit;
             CREATE ALARM turned_away ON callers PER caller WHEN outcome = 'refused' SEVERITY 'medium';",
            pipeline_with_alarm()
        ),
        &[
            "--auth",
            file.to_str().unwrap(),
            "--checkpoint-interval",
            "1s",
        ],
    );
    let address = engine.address.clone();
    let sql = "content-type: application/sql".to_string();
    let view = "CREATE MATERIALIZED VIEW added AS SELECT zone FROM zone_stats";
    assert_eq!(
        request(
            &address,
            "POST",
            "/v1/sql",
            &[sql.clone(), bearer(&ci)],
            Some(view)
        )
        .status,
        200
    );
    assert_eq!(
        request(
            &address,
            "POST",
            "/v1/sql",
            &[sql.clone(), bearer(&maria)],
            Some(view)
        )
        .status,
        403
    );
    assert_eq!(
        request(&address, "POST", "/v1/sql", &[sql], Some(view)).status,
        401
    );
    let impersonating = request(
        &address,
        "POST",
        "/v1/alarms/hot/acknowledge",
        &["content-type: application/json".into(), bearer(&maria)],
        Some(r#"{"key": {"zone": "r01-z01"}, "by": "the-boss"}"#),
    );
    assert_eq!(impersonating.status, 403);

    let trail = engine.dir.path().join("pipeline.audit.jsonl");
    let entries: Vec<serde_json::Value> = std::fs::read_to_string(&trail)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let find = |actor: &str, action: &str, outcome: &str| {
        entries
            .iter()
            .find(|e| e["actor"] == actor && e["action"] == action && e["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {actor} {action} {outcome} in {entries:#?}"))
    };
    let created = find("ci", "sql", "ok");
    assert_eq!(created["target"], view);
    assert_eq!(created["role"], "engineer");
    assert!(created["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    find("ci", "token", "ok");
    assert!(
        find("maria", "refused", "refused")["detail"]
            .as_str()
            .unwrap()
            .contains("operator role")
    );
    find("anonymous", "refused", "refused");
    assert!(
        find("maria", "alarm", "refused")["detail"]
            .as_str()
            .unwrap()
            .contains("the-boss")
    );
    // The pipeline reads the trail as the relation `audit`: a sink copies it, a view counts.
    let copy = engine.dir.path().join("audit_out.jsonl");
    wait_for_lines(&copy, entries.len());
    let counted = |engine: &Engine| {
        let view = request(
            &engine.address,
            "GET",
            "/v1/views/refused",
            &[bearer(&ci)],
            None,
        );
        assert_eq!(view.status, 200, "{}", view.body);
        let rows: serde_json::Value = serde_json::from_str(&view.body).unwrap();
        rows["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                (
                    row["actor"].as_str().unwrap().to_string(),
                    row["n"].as_i64().unwrap(),
                )
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let wait_for_count = |engine: &Engine, actor: &str, n: i64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while counted(engine).get(actor) != Some(&n) {
            assert!(
                Instant::now() < deadline,
                "waited for {n} refusals of {actor}: {:?}",
                counted(engine)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for_count(&engine, "maria", 2);
    wait_for_count(&engine, "anonymous", 1);
    // A quiet trail lets its watermark follow the clock: the alarm on it is raised promptly.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = request(
            &address,
            "GET",
            "/v1/views/turned_away_state",
            &[bearer(&ci)],
            None,
        );
        if state.body.contains(r#""caller":"maria","state":"active""#) {
            break;
        }
        assert!(Instant::now() < deadline, "{}", state.body);
        std::thread::sleep(Duration::from_millis(100));
    }

    // Killed and started again on its state: the copy holds every entry of the trail, once.
    std::thread::sleep(Duration::from_millis(1500)); // a checkpoint holds part of the trail
    engine.crash_and_restart();
    let address = engine.address.clone();
    let after = request(&address, "GET", "/v1/views", &[bearer("vlx_wrong")], None);
    assert_eq!(after.status, 401);
    let key = |entry: &serde_json::Value| {
        format!(
            "{} {} {} {}",
            entry["actor"], entry["action"], entry["outcome"], entry["target"]
        )
    };
    let trail_now = json_lines(&trail);
    assert!(trail_now.len() > entries.len());
    let copied = wait_for_lines(&copy, trail_now.len());
    let mut expected: Vec<String> = trail_now.iter().map(key).collect();
    let mut got: Vec<String> = copied.iter().map(key).collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "the copy of the trail after a crash");
    wait_for_count(&engine, "anonymous", 2);
    wait_for_count(&engine, "maria", 2);
}
