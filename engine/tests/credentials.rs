//! Credentials beyond the tokens file, and the transport they travel in: HTTPS and WebSockets
//! over TLS verified against a CA, and JWTs from a site's identity provider checked against its
//! JWKS file.

mod common;

use std::process::Command;

use common::{PIPELINE, bearer, request, start_engine_with};

#[test]
fn https_and_websockets_over_tls_are_verified_against_the_ca() {
    let certificates = tempfile::tempdir().unwrap();
    let ca = common::tls::make_certificates(certificates.path());
    let cert = certificates.path().join("server.pem");
    let key = certificates.path().join("server.key");
    let engine = start_engine_with(
        PIPELINE,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    engine.wait_for_log("serving https://", 1);
    let url = format!("https://{}/v1/views", engine.address);
    let curl = |args: &[&str]| {
        Command::new("curl")
            .args(["-s", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}"])
            .args(args)
            .arg(&url)
            .output()
            .unwrap()
    };
    let verified = curl(&["--cacert", ca.to_str().unwrap()]);
    let answer = String::from_utf8_lossy(&verified.stdout);
    assert!(
        answer.ends_with("200") && answer.contains("zone_stats"),
        "{answer}"
    );
    // Without the CA, curl does not trust the server; plain HTTP is not served on the port.
    let unverified = curl(&[]);
    assert_eq!(unverified.status.code(), Some(60), "{unverified:?}");
    let plain = request(&engine.address, "GET", "/v1/views", &[], None);
    assert_ne!(plain.status, 200);

    // A WebSocket subscription over TLS gets its snapshot.
    let handshake = format!(
        "GET /v1/views/zone_stats/subscribe HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        engine.address
    );
    let script = format!(
        "(printf '{}'; sleep 2) | timeout 5 openssl s_client -quiet -connect {} -CAfile {} -verify_return_error 2> /dev/null",
        handshake.replace('\r', "\\r").replace('\n', "\\n"),
        engine.address,
        ca.display()
    );
    let output = Command::new("bash").args(["-c", &script]).output().unwrap();
    let received = String::from_utf8_lossy(&output.stdout);
    assert!(received.contains("101 Switching Protocols"), "{received}");
    assert!(received.contains("\"snapshot\""), "{received}");
}

/// Writes `jwks.json` (one RSA key, `site`) in `dir` and prints JWTs as `name token` lines:
/// viewer, engineer, expired, wrong_issuer, unknown_key (signed by a key not in the set).
const MINT_JWTS: &str = r#"
import json, sys, time
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

dir = sys.argv[1]
site, other = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(site.public_key()))
public.update(kid="site", use="sig", alg="RS256")
open(f"{dir}/jwks.json", "w").write(json.dumps({"keys": [public]}))
now = int(time.time())
def mint(key, kid, **claims):
    base = {"iss": "https://idp.example", "sub": "nobody", "exp": now + 600, "iat": now}
    base.update(claims)
    return jwt.encode(base, key, algorithm="RS256", headers={"kid": kid})
print("viewer", mint(site, "site", sub="grafana", vibelux_role="viewer"))
print("engineer", mint(site, "site", sub="dana@example", vibelux_role="engineer"))
print("expired", mint(site, "site", sub="old", vibelux_role="admin", exp=now - 3600))
print("wrong_issuer", mint(site, "site", sub="eve", vibelux_role="admin", iss="https://evil.example"))
print("unknown_key", mint(other, "site", sub="eve", vibelux_role="admin"))
"#;

#[test]
fn jwts_signed_by_the_sites_keys_carry_their_subject_and_role() {
    let keys = tempfile::tempdir().unwrap();
    let minted = Command::new("python3")
        .args(["-c", MINT_JWTS])
        .arg(keys.path())
        .output()
        .unwrap();
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let tokens: std::collections::HashMap<String, String> = String::from_utf8(minted.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(name, token)| (name.to_string(), token.to_string()))
        .collect();
    // An empty tokens file: every caller comes with a JWT.
    let tokens_file = keys.path().join("tokens.toml");
    std::fs::write(&tokens_file, "").unwrap();
    let jwks = keys.path().join("jwks.json");
    let engine = start_engine_with(
        PIPELINE,
        &[
            "--auth",
            tokens_file.to_str().unwrap(),
            "--jwks",
            jwks.to_str().unwrap(),
            "--jwt-issuer",
            "https://idp.example",
        ],
    );
    let get = |token: &str| request(&engine.address, "GET", "/v1/views", &[bearer(token)], None);
    let post = |token: &str, sql: &str| {
        request(
            &engine.address,
            "POST",
            "/v1/sql",
            &[bearer(token), "content-type: application/sql".to_string()],
            Some(sql),
        )
    };
    assert_eq!(get(&tokens["viewer"]).status, 200);
    let refused = post(
        &tokens["viewer"],
        "CREATE MATERIALIZED VIEW a AS SELECT zone FROM zone_stats",
    );
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("grafana"), "{}", refused.body);
    let created = post(
        &tokens["engineer"],
        "CREATE MATERIALIZED VIEW b AS SELECT zone FROM zone_stats",
    );
    assert_eq!(created.status, 200, "{}", created.body);
    for name in ["expired", "wrong_issuer", "unknown_key"] {
        assert_eq!(get(&tokens[name]).status, 401, "{name}");
    }
    let trail = std::fs::read_to_string(engine.dir.path().join("pipeline.audit.jsonl")).unwrap();
    assert!(
        trail
            .lines()
            .any(|line| line.contains("\"actor\":\"dana@example\"")
                && line.contains("CREATE MATERIALIZED VIEW b")),
        "{trail}"
    );
}
