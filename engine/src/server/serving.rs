//! `vibelux run`'s options for its HTTP server, and the refusals that keep a default
//! installation from being reachable by strangers.
//!
//! Without tokens the server may only listen on loopback: on any other address, anyone on the
//! network could change the pipeline and, through it, write to PLCs. That is refused at start,
//! saying which flag makes it safe, rather than warned about in a log nobody reads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::audit::{AuditLog, default_audit_path};
use super::guard::{Access, DEFAULT_MAX_SHELVE, DEFAULT_MAX_SUBSCRIBERS};
use crate::auth::TokenStore;
use crate::auth::jwt::{JwtRules, JwtVerifier};
use crate::confinement::{ApiLimits, DEFAULT_MAX_API_OBJECTS};

#[derive(Debug, Clone, Copy)]
pub enum HttpAddress {
    Off,
    At(SocketAddr),
}

pub fn parse_http(text: &str) -> Result<HttpAddress, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(HttpAddress::Off);
    }
    text.parse()
        .map(HttpAddress::At)
        .map_err(|_| format!("`{text}` is not an address like 127.0.0.1:8080 (or `off`)"))
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Serve the dashboard, HTTP API and live views here (`off` to disable; port 0 picks one).
    /// Addresses other than loopback need --auth.
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = parse_http)]
    pub http: HttpAddress,
    /// Require a token on every API request and WebSocket: the tokens file that `vibelux auth
    /// token` writes (read again when it changes).
    #[arg(long, value_name = "FILE")]
    pub auth: Option<PathBuf>,
    /// Also answer to this host name (repeatable): the name a proxy or a dashboard uses.
    /// Without it, a loopback server answers to localhost, 127.0.0.1 and [::1] only, and a
    /// server on another address with --auth to any name.
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_hosts: Vec<String>,
    /// Let pages of this origin call the API (repeatable), e.g. `https://grafana.example:3000`.
    #[arg(long = "allow-origin", value_name = "URL")]
    pub allow_origins: Vec<String>,
    /// The longest an operator may shelve an alarm for.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub max_shelve: Duration,
    /// Files that sinks added over the API write stay inside this folder (default: the working
    /// directory, where the pipeline's relative paths land).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A host (`name`, or `name:port`) that sinks added over the API may connect to
    /// (repeatable): webhooks, brokers, PLCs. None by default.
    #[arg(long = "allow-outbound", value_name = "HOST[:PORT]")]
    pub allow_outbound: Vec<String>,
    /// WebSocket subscriptions one token may hold at once (without tokens: this machine).
    #[arg(long, default_value_t = DEFAULT_MAX_SUBSCRIBERS)]
    pub max_subscribers: usize,
    /// The audit trail of changes and refusals over the API, JSON lines (default:
    /// `NAME.audit.jsonl` in the working directory for the pipeline file `NAME.sql`; `off`
    /// keeps none).
    #[arg(long, value_name = "FILE|off")]
    pub audit_log: Option<String>,
    /// How many views and sinks the API may add to the pipeline file's.
    #[arg(long, default_value_t = DEFAULT_MAX_API_OBJECTS)]
    pub max_api_objects: usize,
    /// Also accept JWTs signed by a key of this JSON Web Key Set (read again when it changes):
    /// `sub` names the caller, `vibelux_role` gives the role. With --auth.
    #[arg(long, value_name = "FILE", requires = "auth")]
    pub jwks: Option<PathBuf>,
    /// A JWT's `iss` must be this.
    #[arg(long, value_name = "ISSUER", requires = "jwks")]
    pub jwt_issuer: Option<String>,
    /// A JWT's `aud` must include this.
    #[arg(long, value_name = "AUDIENCE", requires = "jwks")]
    pub jwt_audience: Option<String>,
    /// Serve the Postgres wire protocol here (default 127.0.0.1:6875 while HTTP is served;
    /// `off` to disable). Addresses other than loopback need --auth.
    #[arg(long, value_name = "ADDR|off", value_parser = parse_http)]
    pub pg: Option<HttpAddress>,
    /// A certificate chain (PEM): HTTPS (and WebSockets over TLS) only, and TLS on the
    /// Postgres port; with --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Where the Postgres port listens unless told otherwise (Materialize's port).
pub const DEFAULT_PG: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    6875,
));

impl Default for ServeArgs {
    fn default() -> Self {
        ServeArgs {
            http: HttpAddress::At(SocketAddr::from(([127, 0, 0, 1], 8080))),
            auth: None,
            allow_hosts: Vec::new(),
            allow_origins: Vec::new(),
            max_shelve: DEFAULT_MAX_SHELVE,
            data_dir: None,
            audit_log: None,
            max_subscribers: DEFAULT_MAX_SUBSCRIBERS,
            allow_outbound: Vec::new(),
            max_api_objects: DEFAULT_MAX_API_OBJECTS,
            pg: None,
            jwks: None,
            jwt_issuer: None,
            jwt_audience: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl ServeArgs {
    /// Opens the audit trail for the pipeline file `pipeline`, unless `--audit-log off`.
    pub fn audit(&self, pipeline: &std::path::Path) -> anyhow::Result<Option<AuditLog>> {
        match self.audit_path(pipeline) {
            Some(path) => AuditLog::open(&path).map(Some),
            None => Ok(None),
        }
    }

    /// Where the audit trail goes (`--audit-log`, or beside the pipeline), `None` when off.
    pub fn audit_path(&self, pipeline: &std::path::Path) -> Option<PathBuf> {
        match self.audit_log.as_deref() {
            Some(off) if off.eq_ignore_ascii_case("off") => None,
            Some(path) => Some(PathBuf::from(path)),
            None => Some(default_audit_path(pipeline)),
        }
    }

    /// What sinks added over the API may reach.
    pub fn limits(&self) -> anyhow::Result<ApiLimits> {
        let mut limits = ApiLimits::here();
        if let Some(dir) = &self.data_dir {
            limits.data_dir = dir
                .canonicalize()
                .map_err(|error| anyhow::anyhow!("--data-dir {}: {error}", dir.display()))?;
        }
        limits.outbound = self.allow_outbound.clone();
        limits.max_objects = self.max_api_objects;
        Ok(limits)
    }

    /// Who may call a server on `address`; refuses a non-loopback address without tokens.
    pub fn access(&self, address: SocketAddr) -> anyhow::Result<Access> {
        let tokens = match &self.auth {
            Some(path) => {
                let mut store = TokenStore::open(path)?;
                if let Some(jwks) = &self.jwks {
                    let rules = JwtRules {
                        issuer: self.jwt_issuer.clone(),
                        audience: self.jwt_audience.clone(),
                    };
                    store = store.with_jwt(JwtVerifier::open(jwks, rules)?);
                }
                if store.is_empty() && !store.accepts_jwts() {
                    tracing::warn!(
                        "{} holds no token: every API request will be refused until one is added (vibelux auth token)",
                        path.display()
                    );
                }
                Some(Arc::new(store))
            }
            None => None,
        };
        if tokens.is_none() {
            refuse_exposed("HTTP", address)?;
            if let Some((pg, _)) = self.pg_address() {
                refuse_exposed("Postgres", pg)?;
            }
        }
        let mut extra: Vec<String> = self
            .allow_hosts
            .iter()
            .map(|name| name.trim().to_ascii_lowercase())
            .collect();
        let hosts = if address.ip().is_loopback() || !extra.is_empty() {
            let mut hosts = Access::loopback_names();
            if !address.ip().is_unspecified() {
                hosts.push(match address {
                    SocketAddr::V4(v4) => v4.ip().to_string(),
                    SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
                });
            }
            hosts.append(&mut extra);
            Some(hosts)
        } else {
            None
        };
        for origin in &self.allow_origins {
            if !origin.contains("://") || origin.ends_with('/') {
                anyhow::bail!(
                    "--allow-origin {origin}: give an origin as a browser sends it, scheme://host[:port] with no path"
                );
            }
        }
        let mut access = Access::new(tokens, hosts, self.allow_origins.clone());
        access.max_shelve = self.max_shelve;
        access.max_subscribers = self.max_subscribers;
        Ok(access)
    }
}

/// Refuses to serve `protocol` on a non-loopback `address` without tokens.
fn refuse_exposed(protocol: &str, address: SocketAddr) -> anyhow::Result<()> {
    if address.ip().is_loopback() {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to serve {protocol} on {address} without tokens: anyone who can reach it could change the pipeline and write to PLCs. \
         Create tokens with `vibelux auth token --name NAME --role ROLE` and pass --auth FILE, or serve on 127.0.0.1"
    )
}

impl ServeArgs {
    /// Where the Postgres port listens, and whether `--pg` chose it (a default port that is
    /// taken is skipped with a warning; a chosen one that is taken is an error).
    pub fn pg_address(&self) -> Option<(SocketAddr, bool)> {
        match (self.pg, self.http) {
            (Some(HttpAddress::Off), _) => None,
            (Some(HttpAddress::At(address)), _) => Some((address, true)),
            (None, HttpAddress::At(_)) => Some((DEFAULT_PG, false)),
            (None, HttpAddress::Off) => None,
        }
    }

    /// The TLS acceptors for `--tls-cert` and `--tls-key`.
    pub fn tls(&self) -> anyhow::Result<Option<super::tls::TlsAcceptors>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        super::tls::acceptors(cert, key).map(Some)
    }
}
