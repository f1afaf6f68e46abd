//! The HTTP and WebSocket server of a running pipeline (`vibelux run`, `--http`).
//!
//! It runs on its own small tokio runtime beside the timely workers and reads only what they
//! share: the live views' state and the run's counters. Nothing a client does — many
//! subscribers, slow ones, scrapes — reaches into the dataflow. The API is described in
//! `docs/live-views.md` and served as OpenAPI at `/openapi.json`.

mod alarms;
pub mod audit;
mod background;
mod dashboard;
pub mod guard;
pub mod metrics;
pub mod postgres;
pub mod serving;
pub mod subscribe;
pub mod tls;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};

use crate::control::{Control, ControlError};
use crate::live::protocol::{columns_json, contents_body, key_names};
use crate::live::view::{LiveView, LiveViews};
use crate::runtime::RunMetrics;
use audit::{AuditEntry, AuditLog, Peer};
pub use guard::{Access, Caller};
use subscribe::{SubscribeOptions, serve_subscriber};
use websocket::WebSocketRequest;

/// What the handlers read.
pub struct ServerState {
    pub views: LiveViews,
    pub metrics: Arc<RunMetrics>,
    pub started: std::time::Instant,
    /// Applies posted statements (`None` when the run takes no changes).
    pub control: Option<Arc<Control>>,
    /// Who may call, from where (`guard`).
    pub access: Arc<Access>,
    /// Where changes and refusals are recorded (`None`: nowhere).
    pub audit: Option<Arc<AuditLog>>,
    /// This process's place in a cluster, when it is one of several.
    pub cluster: Option<ClusterPlace>,
}

/// A process of a cluster, as its server sees it: process 0 serves the views and the API,
/// the others their own `/metrics` and `/healthz`.
#[derive(Debug, Clone)]
pub struct ClusterPlace {
    pub process: usize,
    /// Process 0's cluster address (`host:port` in the hosts file), for pointing callers there.
    pub first: String,
}

impl ServerState {
    /// Records `entry` in the audit trail, if the run keeps one.
    pub fn audit(&self, entry: AuditEntry<'_>) {
        if let Some(audit) = &self.audit {
            audit.record(entry);
        }
    }

    /// The sinks created while running (`POST /v1/sql`) and not dropped.
    pub fn added_sinks(&self) -> Vec<(String, Arc<vibelux_connectors::sink::SinkMetrics>)> {
        self.control.as_ref().map_or_else(Vec::new, |control| {
            control
                .added_sinks
                .sinks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        })
    }
}

/// A JSON error body with a status: `{"error": "…"}`.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

fn find_view(state: &ServerState, name: &str) -> Result<Arc<LiveView>, ApiError> {
    state.views.get(name).ok_or_else(|| {
        let views = state.views.all();
        let names: Vec<&str> = views.iter().map(|v| v.name.as_str()).collect();
        ApiError(
            StatusCode::NOT_FOUND,
            if names.is_empty() {
                format!(
                    "no materialized view `{name}`: this pipeline has none (CREATE MATERIALIZED VIEW serves one)"
                )
            } else {
                format!(
                    "no materialized view `{name}`; there are: {}",
                    names.join(", ")
                )
            },
        )
    })
}

fn describe(view: &LiveView) -> Value {
    let (resumable_from, frontier) = view.resumable();
    json!({
        "name": view.name,
        "columns": columns_json(view),
        "key": key_names(view),
        "rows": view.len(),
        "subscribers": view.subscribers(),
        "ts": frontier,
        "resumable_from": resumable_from,
        "complete": view.is_closed(),
    })
}

async fn list_views(State(state): State<Arc<ServerState>>) -> axum::Json<Value> {
    axum::Json(
        json!({ "views": state.views.all().iter().map(|v| describe(v)).collect::<Vec<_>>() }),
    )
}

async fn view_contents(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let view = find_view(&state, &name)?;
    let snapshot = view.snapshot();
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        contents_body(&view, snapshot.time, &snapshot.rows),
    )
        .into_response())
}

async fn subscribe(
    State(state): State<Arc<ServerState>>,
    Extension(caller): Extension<Caller>,
    peer: Option<Extension<Peer>>,
    Path(name): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    upgrade: WebSocketRequest,
) -> Result<Response, ApiError> {
    let view = find_view(&state, &name)?;
    let options = SubscribeOptions::parse(&view, &query)
        .map_err(|message| ApiError(StatusCode::BAD_REQUEST, message))?;
    if let Some(from) = options.resume_from {
        let (oldest, frontier) = view.resumable();
        if from < oldest || from > frontier {
            return Err(ApiError(
                StatusCode::GONE,
                format!(
                    "cannot resume `{}` from {from}: history is kept from {oldest} to {frontier}; subscribe without resume_from for a new snapshot",
                    view.name
                ),
            ));
        }
    }
    let seat = state.access.seat(&caller)?;
    state.audit(AuditEntry {
        actor: caller.name(),
        role: caller.token_role(),
        action: "subscribe",
        target: &view.name,
        outcome: "ok",
        detail: "",
        peer: peer.map(|Extension(peer)| peer),
    });
    Ok(upgrade.accept(move |socket, already_read| async move {
        serve_subscriber(socket, already_read, view, options).await;
        drop(seat);
    }))
}

/// `ok` (200), or `degraded` (503) while a sink cannot deliver, a source cannot read or
/// checkpoints cannot be stored, with
/// why: the engine keeps what it holds and retries, but someone has to free the disk.
async fn healthz(State(state): State<Arc<ServerState>>) -> Response {
    let added_sinks = state.added_sinks();
    let stalled_sinks: Vec<Value> = state
        .metrics
        .sinks
        .iter()
        .chain(&added_sinks)
        .filter_map(|(name, sink)| Some(json!({"sink": name, "problem": sink.stalled()?})))
        .collect();
    let failing_sources: Vec<Value> = state
        .metrics
        .sources
        .iter()
        .filter_map(|(name, source)| Some(json!({"source": name, "problem": source.problem()?})))
        .collect();
    let checkpoint_failure = state
        .metrics
        .checkpoints
        .as_ref()
        .and_then(|checkpoints| checkpoints.failure());
    let healthy =
        stalled_sinks.is_empty() && failing_sources.is_empty() && checkpoint_failure.is_none();
    let mut body = json!({
        "status": if healthy { "ok" } else { "degraded" },
        "uptime_seconds": state.started.elapsed().as_secs_f64(),
        "stalled_sinks": stalled_sinks,
        "failing_sources": failing_sources,
    });
    if let Some(failure) = checkpoint_failure {
        body["failing_checkpoints"] = json!(failure);
    }
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn prometheus(State(state): State<Arc<ServerState>>) -> Response {
    match metrics::encode(&state) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => {
            ApiError(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
        }
    }
}

/// The statements of a `POST /v1/sql`: the body as `application/sql`, or `{"sql": …}` as
/// `application/json`. Other types are refused: a form or `text/plain` is what a page on any
/// site can make a browser post without asking.
fn posted_statements(headers: &HeaderMap, body: &[u8]) -> Result<String, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let not_text = || ApiError(StatusCode::BAD_REQUEST, "the body is not UTF-8 text".into());
    match essence.as_str() {
        "application/sql" => String::from_utf8(body.to_vec()).map_err(|_| not_text()),
        "application/json" => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Posted {
                sql: String,
            }
            serde_json::from_slice::<Posted>(body)
                .map(|posted| posted.sql)
                .map_err(|error| {
                    ApiError(
                        StatusCode::BAD_REQUEST,
                        format!("the JSON body must be {{\"sql\": \"…\"}}: {error}"),
                    )
                })
        }
        _ => Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "POST /v1/sql takes `Content-Type: application/sql` (the statements) or `application/json` ({{\"sql\": …}}), not `{content_type}`: a form or text/plain post is what a page on another site can send"
            ),
        )),
    }
}

async fn post_sql(
    State(state): State<Arc<ServerState>>,
    Extension(caller): Extension<Caller>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let answer = execute_sql(&state, &caller, &headers, &body).await;
    let statements = String::from_utf8_lossy(&body);
    let (outcome, detail) = match &answer {
        Ok(_) => ("ok", String::new()),
        Err(ApiError(status, message)) if status.is_client_error() => ("refused", message.clone()),
        Err(ApiError(_, message)) => ("failed", message.clone()),
    };
    state.audit(AuditEntry {
        actor: caller.name(),
        role: caller.token_role(),
        action: "sql",
        target: &statements,
        outcome,
        detail: &detail,
        peer: peer.map(|Extension(peer)| peer),
    });
    answer
}

async fn execute_sql(
    state: &Arc<ServerState>,
    caller: &Caller,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<axum::Json<Value>, ApiError> {
    let body = posted_statements(headers, body).inspect_err(|refusal| {
        if refusal.0 == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            state.access.refused("content_type");
        }
    })?;
    let Some(control) = state.control.clone() else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "this run takes no changes".into(),
        ));
    };
    let may_actuate = caller.role().includes(crate::auth::Role::Admin);
    // Planning and opening sinks block: keep them off the async threads.
    let outcome = tokio::task::spawn_blocking(move || control.execute(&body, may_actuate))
        .await
        .map_err(|error| ApiError(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?;
    match outcome {
        Ok(results) => Ok(axum::Json(json!({ "results": results }))),
        Err(ControlError::Sql(message)) => Err(ApiError(StatusCode::BAD_REQUEST, message)),
        Err(ControlError::Unavailable(message)) => Err(ApiError(StatusCode::CONFLICT, message)),
        Err(ControlError::Forbidden(message)) => {
            state.access.refused("limits");
            Err(ApiError(StatusCode::FORBIDDEN, message))
        }
    }
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../../../docs/openapi.json"),
    )
        .into_response()
}

/// The stack of the server's threads, which plan posted statements.
pub const PLANNING_STACK_BYTES: usize = 16 << 20;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Connections served at once; further clients wait in the listen queue.
pub const MAX_CONNECTIONS: usize = 1024;

pub fn router(state: Arc<ServerState>) -> Router {
    if let Some(place) = state.cluster.as_ref().filter(|place| place.process > 0) {
        return peer_router(state.clone(), place);
    }
    Router::new()
        .route("/", get(dashboard::page))
        .route("/dashboard.js", get(dashboard::script))
        .route("/plot.js", get(dashboard::plot))
        .route("/healthz", get(healthz))
        .route("/metrics", get(prometheus))
        .route("/openapi.json", get(openapi))
        .route("/v1/views", get(list_views))
        .route("/v1/views/{name}", get(view_contents))
        .route("/v1/views/{name}/subscribe", get(subscribe))
        .route("/v1/sql", post(post_sql))
        .route("/v1/alarms/{name}/{action}", post(alarms::command))
        // Statements and commands are small; a large body is a mistake or an attack.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .with_state(state)
}

/// What a process of a cluster other than process 0 serves: its own health and metrics (its
/// workers' sources, the steps of its dataflow), and a pointer to process 0 for the rest.
fn peer_router(state: Arc<ServerState>, place: &ClusterPlace) -> Router {
    let elsewhere = format!(
        "process {} of a cluster serves /metrics and /healthz; live views, the API and the Postgres port are on process 0 ({} in the hosts file)",
        place.process,
        place
            .first
            .rsplit_once(':')
            .map_or(place.first.as_str(), |(host, _)| host)
    );
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(prometheus))
        .fallback(move || {
            let elsewhere = elsewhere.clone();
            async move {
                (
                    StatusCode::NOT_FOUND,
                    axum::Json(serde_json::json!({ "error": elsewhere })),
                )
            }
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .with_state(state)
}

/// Serves each connection as HTTP/1.1 on the plain TCP stream, which a WebSocket upgrade
/// takes back whole (see `websocket`).
async fn serve(listener: tokio::net::TcpListener, app: Router, relayed: tls::TlsPeers) {
    background::accept_each(listener, "HTTP", move |stream, connected| {
        // A connection relayed from TLS is recorded as its client's.
        let peer = relayed.client(connected).unwrap_or(connected);
        // Each request knows where it came from: the audit trail records it.
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            app.clone(),
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(Peer(peer));
                request
            },
        ));
        async move {
            // The timer bounds how long a client may take to send its request's head.
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(error) = connection.await {
                tracing::debug!(%error, "an HTTP connection ended");
            }
        }
    })
    .await
}

/// A server running on its own threads; dropped, it stops.
pub struct Server {
    pub address: SocketAddr,
    _running: background::Background,
}

impl Server {
    /// Binds `address` (port 0 picks a free one) and serves until dropped; with `tls`, HTTPS
    /// (and WebSockets over it) only.
    pub fn start(
        address: SocketAddr,
        state: Arc<ServerState>,
        tls: Option<pgwire::tokio::TlsAcceptor>,
    ) -> anyhow::Result<Server> {
        let runtime = background::runtime("vibelux-http")?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(address))
            .map_err(|error| {
                anyhow::anyhow!(
                    "cannot serve HTTP on {address}: {error} (choose another with --http ADDR, or --http off)"
                )
            })?;
        let address = listener.local_addr()?;
        // With TLS the listener on `address` decrypts, and the plain server listens on
        // loopback behind it (`tls`).
        let peers = tls::TlsPeers::default();
        let (plain, front) = match tls {
            None => (listener, None),
            Some(acceptor) => {
                let plain = runtime.block_on(tokio::net::TcpListener::bind(SocketAddr::from((
                    [127, 0, 0, 1],
                    0,
                ))))?;
                let behind = plain.local_addr()?;
                (plain, Some((listener, acceptor, behind)))
            }
        };
        let app = router(state);
        let running = background::Background::spawn("vibelux-http", runtime, async move {
            if let Some((listener, acceptor, behind)) = front {
                tokio::spawn(tls::terminate(listener, acceptor, behind, peers.clone()));
            }
            serve(plain, app, peers).await
        })?;
        Ok(Server {
            address,
            _running: running,
        })
    }
}
