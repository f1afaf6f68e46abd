//! `deploy/` agrees with the binary it deploys: every flag the image, the compose file and the
//! chart pass exists, the ports and probe paths are the ones the engine serves, the chart's
//! templates use only values it defines, and every metric the Grafana dashboard queries is in a
//! running engine's `/metrics`. (No container engine or Helm runs here: the image is not built
//! and the chart not rendered by these tests.)

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{PIPELINE, request, start_engine_with};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy().join(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn help(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success(), "vibelux {args:?} --help");
    String::from_utf8(output.stdout).unwrap()
}

/// The `--flag` names in `text`.
fn flags(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("--") {
        rest = &rest[at + 2..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '-')
            .collect();
        if name.len() > 1 {
            found.insert(format!("--{name}"));
        }
    }
    found
}

/// What `deploy/checks/read_deploy.py` says of the YAML files.
fn yaml() -> serde_json::Value {
    let output = Command::new("python3")
        .arg(deploy().join("checks/read_deploy.py"))
        .arg(deploy())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn every_flag_the_image_the_compose_file_and_the_chart_pass_exists() {
    let run = help(&["run"]);
    let statefulset = read("helm/vibelux/templates/statefulset.yaml");
    let compose = read("compose/docker-compose.yml");
    let dockerfile = read("Dockerfile");
    // The engine's arguments: the StatefulSet's, and the compose file's `vibelux` service's.
    let engine_command =
        yaml()["parsed"]["compose/docker-compose.yml"]["services"]["vibelux"]["command"]
            .to_string();
    let passed: BTreeSet<String> = [&statefulset, &engine_command]
        .iter()
        .flat_map(|text| flags(text))
        .collect();
    assert!(passed.contains("--hosts") || statefulset.contains("VIBELUX_HOSTS"));
    for flag in &passed {
        assert!(run.contains(flag.as_str()), "`vibelux run` has no {flag}");
    }
    // The cluster comes from the environment in the chart.
    for variable in ["VIBELUX_HOSTS", "VIBELUX_PROCESS"] {
        assert!(statefulset.contains(variable));
        assert!(run.contains(&format!("env: {variable}")), "{run}");
    }
    // The token service makes tokens as `vibelux auth token` takes them.
    let token = help(&["auth", "token"]);
    for flag in ["--name", "--role", "--file"] {
        assert!(compose.contains(flag) && token.contains(flag));
    }
    // The image's health check and its ports.
    assert!(help(&["probe"]).contains("URL"));
    assert!(dockerfile.contains(r#""vibelux", "probe", "http://127.0.0.1:8080/healthz""#));
    assert!(dockerfile.contains("EXPOSE 8080 6875 2101"));
}

#[test]
fn the_yaml_parses_and_agrees_on_ports_probes_and_values() {
    let deploy = yaml();
    let undefined = &deploy["undefined_values"];
    assert_eq!(
        undefined,
        &serde_json::json!([]),
        "templates use undefined values"
    );
    let parsed = &deploy["parsed"];
    let values = &parsed["helm/vibelux/values.yaml"];
    assert_eq!(values["ports"]["http"], 8080);
    assert_eq!(values["ports"]["postgres"], 6875);
    assert_eq!(values["ports"]["cluster"], 2101);
    let statefulset = read("helm/vibelux/templates/statefulset.yaml");
    assert_eq!(statefulset.matches("path: /healthz").count(), 2);

    let compose = &parsed["compose/docker-compose.yml"]["services"];
    let command: Vec<String> = compose["vibelux"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| arg.as_str().unwrap().to_string())
        .collect();
    assert!(command.contains(&"--http=0.0.0.0:8080".to_string()));
    assert!(command.contains(&"--auth=/secrets/tokens.toml".to_string()));
    let scrape = &parsed["compose/prometheus.yml"]["scrape_configs"][0];
    assert_eq!(scrape["static_configs"][0]["targets"][0], "vibelux:8080");
    assert!(command.contains(&"--allow-host=vibelux".to_string()));
    assert_eq!(
        scrape["authorization"]["credentials_file"],
        "/secrets/prometheus.token"
    );
    assert!(
        compose["tokens"]["command"][0]
            .as_str()
            .unwrap()
            .contains("> /secrets/prometheus.token")
    );
    // Grafana's provider reads the folder the dashboard is mounted in.
    let provider = &parsed["compose/grafana-provisioning/dashboards/vibelux.yml"]["providers"][0];
    let folder = provider["options"]["path"].as_str().unwrap();
    assert!(
        compose["grafana"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|volume| volume.as_str().unwrap() == format!("../grafana:{folder}:ro"))
    );
}

/// The metric names in a Prometheus text exposition, as queries name them.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            match kind {
                "counter" => names.insert(format!("{name}_total")),
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                    true
                }
                _ => names.insert(name.to_string()),
            };
        }
    }
    names
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let dashboard: serde_json::Value = serde_json::from_str(&read("grafana/vibelux.json")).unwrap();
    let mut queried = BTreeSet::new();
    let panels = dashboard["panels"].as_array().unwrap();
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expression = target["expr"].as_str().unwrap();
            let mut rest = expression;
            while let Some(at) = rest.find("vibelux_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 15, "{queried:?}");

    // An engine with checkpoints, an alarm, a sink and a view: every family it can export.
    let engine = start_engine_with(
        &format!(
            "{PIPELINE}
             CREATE ALARM busy ON readings PER zone WHEN temp_c > -100 SEVERITY 'low';
             CREATE SINK counts FROM zone_stats WITH (connector = 'file', path = 'counts.jsonl');"
        ),
        &["--checkpoint-interval", "200ms"],
    );
    // A refusal, so the refusals' family has a member (an empty family is not exported).
    let refused = request(
        &engine.address,
        "GET",
        "/v1/views",
        &["host: elsewhere.example".into()],
        None,
    );
    assert_eq!(refused.status, 403);
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let text = request(&engine.address, "GET", "/metrics", &[], None).body;
        if text.contains("vibelux_checkpoint_age_seconds") && text.contains("busy") {
            break text;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let exported = exported(&metrics);
    let missing: Vec<&String> = queried.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, not in:\n{metrics}"
    );
}
