//! The checks every request passes before a handler sees it: the name it was sent to, the page
//! that sent it, and the token it carries.
//!
//! A server on 127.0.0.1 is still reachable from a web page in the operator's browser: a page
//! may post to it (cross-site request forgery), open a WebSocket to it (which the browser does
//! not restrict to the same origin), or point a name of its own at 127.0.0.1 (DNS rebinding) and
//! read the answers as its own. So the `Host` header must be a name this server answers to, and
//! a request from a browser page (it carries `Origin`) must come from this server's own pages or
//! from an origin allowed on the command line. With `--auth`, every route but the dashboard's
//! static files, `/healthz` and `/openapi.json` needs a token whose role covers it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::audit::{AuditEntry, Peer};
use super::{ApiError, ServerState};
use crate::auth::{Identity, Role, TokenStore};

/// Who may reach the server, and how.
pub struct Access {
    /// The accepted tokens; `None` serves loopback without tokens.
    pub tokens: Option<Arc<TokenStore>>,
    /// The names `Host` may carry (without port); `None` accepts any (a server behind a
    /// proxy or in a cluster, with tokens).
    pub hosts: Option<Vec<String>>,
    /// Origins (`https://dash.example:3000`) besides this server's own whose pages may call it.
    pub origins: Vec<String>,
    /// The longest an alarm may be shelved.
    pub max_shelve: Duration,
    /// WebSocket subscriptions one token (or, without tokens, this machine) may hold at once.
    pub max_subscribers: usize,
    /// Open subscriptions by the name of who holds them.
    subscribers: Mutex<HashMap<String, usize>>,
    /// Requests refused, by reason: `vibelux_http_refusals_total`.
    pub refusals: Family<Vec<(String, String)>, Counter>,
}

impl Access {
    /// Loopback without tokens: the names of this machine only, no other origin.
    pub fn local() -> Access {
        Access::new(None, Some(Self::loopback_names()), Vec::new())
    }

    pub fn new(
        tokens: Option<Arc<TokenStore>>,
        hosts: Option<Vec<String>>,
        origins: Vec<String>,
    ) -> Access {
        Access {
            tokens,
            hosts,
            origins,
            max_shelve: DEFAULT_MAX_SHELVE,
            max_subscribers: DEFAULT_MAX_SUBSCRIBERS,
            subscribers: Mutex::default(),
            refusals: Family::default(),
        }
    }

    /// Counts a refusal: `reason` is one of a few fixed words (host, origin, token, role,
    /// content_type, limits, subscribers).
    pub fn refused(&self, reason: &str) {
        self.refusals
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
    }

    /// A seat for one more subscription of `caller`, given back when dropped; refused past
    /// `max_subscribers`.
    pub fn seat(self: &Arc<Self>, caller: &Caller) -> Result<SubscriberSeat, ApiError> {
        let holder = match caller {
            Caller::Local => "local".to_string(),
            Caller::Token(identity) => identity.name.clone(),
        };
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        let held = subscribers.entry(holder.clone()).or_insert(0);
        if *held >= self.max_subscribers {
            drop(subscribers);
            self.refused("subscribers");
            return Err(ApiError(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "`{holder}` holds {} subscriptions already, the most one token may (--max-subscribers): close some first",
                    self.max_subscribers
                ),
            ));
        }
        *held += 1;
        Ok(SubscriberSeat {
            access: self.clone(),
            holder,
        })
    }

    pub fn loopback_names() -> Vec<String> {
        ["localhost", "127.0.0.1", "[::1]"]
            .into_iter()
            .map(String::from)
            .collect()
    }
}

pub const DEFAULT_MAX_SHELVE: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 100;

/// One open subscription, counted against its holder while it lives.
pub struct SubscriberSeat {
    access: Arc<Access>,
    holder: String,
}

impl Drop for SubscriberSeat {
    fn drop(&mut self) {
        let mut subscribers = self
            .access
            .subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(held) = subscribers.get_mut(&self.holder) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                subscribers.remove(&self.holder);
            }
        }
    }
}

/// Who sent a request, as the handlers see it.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A server without `--auth` (loopback only): anyone on this machine, who names themselves.
    Local,
    Token(Identity),
}

impl Caller {
    /// The name recorded as the actor: the token's own, or `by` for a local caller. A token
    /// cannot act in another's name.
    pub fn actor(&self, by: Option<&str>) -> Result<String, ApiError> {
        let by = by.map(str::trim).filter(|by| !by.is_empty());
        match (self, by) {
            (Caller::Local, Some(by)) => Ok(by.to_string()),
            (Caller::Local, None) => Err(ApiError(
                StatusCode::BAD_REQUEST,
                "`by` names who acts on the alarm".into(),
            )),
            (Caller::Token(identity), None) => Ok(identity.name.clone()),
            (Caller::Token(identity), Some(by)) if by == identity.name => Ok(by.to_string()),
            (Caller::Token(identity), Some(by)) => Err(ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "token `{}` cannot act as `{by}`: a command is recorded in the name of the token that sent it (leave out `by`)",
                    identity.name
                ),
            )),
        }
    }

    /// The name recorded for what it does.
    pub fn name(&self) -> &str {
        match self {
            Caller::Local => "local",
            Caller::Token(identity) => &identity.name,
        }
    }

    /// The role of its token (`None` without tokens).
    pub fn token_role(&self) -> Option<Role> {
        match self {
            Caller::Local => None,
            Caller::Token(identity) => Some(identity.role),
        }
    }

    pub fn role(&self) -> Role {
        match self {
            Caller::Local => Role::Admin,
            Caller::Token(identity) => identity.role,
        }
    }
}

/// What a route needs, and how to say it in a refusal.
fn needed(method: &Method, path: &str) -> Option<(Role, &'static str)> {
    match path {
        "/" | "/dashboard.js" | "/plot.js" | "/healthz" | "/openapi.json" => None,
        "/v1/sql" if method == Method::POST => Some((Role::Engineer, "changing the pipeline")),
        _ if path.starts_with("/v1/alarms/") && method == Method::POST => {
            Some((Role::Operator, "acting on alarms"))
        }
        "/metrics" => Some((Role::Viewer, "reading metrics")),
        _ => Some((Role::Viewer, "reading views")),
    }
}

fn refuse(status: StatusCode, message: String) -> Response {
    let mut response = ApiError(status, message).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"vibelux\""),
        );
    }
    response
}

/// The host part of a `Host` value or an origin's authority, lowercased, without the port.
fn host_name(authority: &str) -> String {
    let authority = authority.trim().to_ascii_lowercase();
    if let Some(rest) = authority.strip_prefix('[') {
        // [::1]:8080
        return match rest.split_once(']') {
            Some((address, _)) => format!("[{address}]"),
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name.to_string(),
        _ => authority,
    }
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// The token a request carries: `Authorization: Bearer …`, or for a WebSocket upgrade (a
/// browser cannot set its headers) `access_token=…` in the query.
fn presented_token(request: &Request) -> Option<String> {
    if let Some(value) = header_text(request.headers(), header::AUTHORIZATION) {
        let (scheme, token) = value.trim().split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string());
    }
    let upgrading = header_text(request.headers(), header::UPGRADE)
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
    if !upgrading {
        return None;
    }
    request.uri().query()?.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == "access_token").then(|| value.to_string())
    })
}

/// Why a request is turned away, before any handler sees it.
struct Refusal {
    status: StatusCode,
    /// The word counted in `vibelux_http_refusals_total`.
    reason: &'static str,
    message: String,
    /// Who it was, when a token said so.
    identity: Option<Identity>,
}

pub async fn guard(
    State(state): State<Arc<ServerState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request.extensions().get::<Peer>().copied();
    let path = request.uri().path().to_string();
    match admit(&state, &request) {
        Ok(Some(caller)) => {
            if let (Caller::Token(identity), Some(audit)) = (&caller, &state.audit)
                && audit.first_use(&identity.name)
            {
                audit.record(AuditEntry {
                    actor: &identity.name,
                    role: Some(identity.role),
                    action: "token",
                    target: &path,
                    outcome: "ok",
                    detail: "first use in this run",
                    peer,
                });
            }
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Ok(None) => next.run(request).await,
        Err(refusal) => {
            state.access.refused(refusal.reason);
            let actor = match (&refusal.identity, &state.access.tokens) {
                (Some(identity), _) => identity.name.as_str(),
                (None, Some(_)) => "anonymous",
                (None, None) => "local",
            };
            state.audit(AuditEntry {
                actor,
                role: refusal.identity.as_ref().map(|identity| identity.role),
                action: "refused",
                target: &format!("{} {path}", request.method()),
                outcome: "refused",
                detail: &refusal.message,
                peer,
            });
            refuse(refusal.status, refusal.message)
        }
    }
}

/// Who sent `request`, if it may go on: `None` for a public route of a server with tokens.
fn admit(state: &ServerState, request: &Request) -> Result<Option<Caller>, Refusal> {
    let access = &state.access;
    let refusal = |status, reason, message| Refusal {
        status,
        reason,
        message,
        identity: None,
    };
    let host = header_text(request.headers(), header::HOST).unwrap_or("");
    if let Some(hosts) = &access.hosts
        && !hosts.contains(&host_name(host))
    {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "host",
            format!(
                "this server does not answer to the name `{host}` (a page reaching it through a name of its own is refused); allow a name with --allow-host NAME"
            ),
        ));
    }
    if let Some(origin) = header_text(request.headers(), header::ORIGIN) {
        let own = origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host));
        if !own && !access.origins.iter().any(|allowed| allowed == origin) {
            return Err(refusal(
                StatusCode::FORBIDDEN,
                "origin",
                format!(
                    "a request from a page of `{origin}` is refused: only this server's own pages may call it; allow a dashboard served elsewhere with --allow-origin {origin}"
                ),
            ));
        }
    }
    let Some(tokens) = &access.tokens else {
        return Ok(Some(Caller::Local));
    };
    let Some((role, what)) = needed(request.method(), request.uri().path()) else {
        return Ok(None);
    };
    let Some(secret) = presented_token(request) else {
        return Err(refusal(
            StatusCode::UNAUTHORIZED,
            "token",
            format!(
                "{what} needs a token: send `Authorization: Bearer TOKEN` (an administrator creates one with `vibelux auth token`)"
            ),
        ));
    };
    let Some(identity) = tokens.identify(&secret) else {
        return Err(refusal(
            StatusCode::UNAUTHORIZED,
            "token",
            "the token is not known here: it was revoked, mistyped or made for another tokens file"
                .into(),
        ));
    };
    if !identity.role.includes(role) {
        return Err(Refusal {
            status: StatusCode::FORBIDDEN,
            reason: "role",
            message: format!(
                "token `{}` has the {} role; {what} needs the {role} role",
                identity.name, identity.role
            ),
            identity: Some(identity),
        });
    }
    Ok(Some(Caller::Token(identity)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_port_and_case() {
        assert_eq!(host_name("LocalHost:8080"), "localhost");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        assert_eq!(host_name("evil.example:80"), "evil.example");
    }

    #[test]
    fn routes_need_the_least_role_that_does_the_job() {
        assert_eq!(needed(&Method::GET, "/healthz"), None);
        assert_eq!(needed(&Method::GET, "/v1/views").unwrap().0, Role::Viewer);
        assert_eq!(
            needed(&Method::POST, "/v1/alarms/a/acknowledge").unwrap().0,
            Role::Operator
        );
        assert_eq!(needed(&Method::POST, "/v1/sql").unwrap().0, Role::Engineer);
        // A route that does not exist still needs a token: its absence is not told to anyone.
        assert_eq!(
            needed(&Method::GET, "/v2/anything").unwrap().0,
            Role::Viewer
        );
    }
}
