//! The Postgres wire protocol (`vibelux run --pg`, 127.0.0.1:6875 by default): psql, psycopg,
//! Grafana's PostgreSQL data source and anything else that speaks Postgres can read the live
//! views and the warehouse, subscribe to a view, and change the pipeline, with the same tokens,
//! roles, limits and audit trail as the HTTP API (`docs/security.md`).
//!
//! It runs on its own small tokio runtime, like the HTTP server, and reads only what the
//! workers share. The protocol itself is the `pgwire` crate's; what a statement does is ours
//! (`statements`, `queries`).

mod encode;
mod login;
mod queries;
pub mod statements;
mod subscribe;
mod tables;

use std::net::SocketAddr;
use std::sync::Arc;

use pgwire::api::auth::StartupHandler;
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{ConnectionManager, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::tokio::TlsAcceptor;

use super::ServerState;
use super::background::{self, Background, accept_each};
use login::Login;
use queries::Queries;

/// An error the client sees, with its SQLSTATE.
pub(crate) fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message,
    )))
}

struct Handlers {
    login: Arc<Login>,
    queries: Arc<Queries>,
    /// Connections by the key a client cancels with (psql's Ctrl-C, psycopg's `cancel`): a
    /// subscription ends only so.
    cancel: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.queries.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.queries.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.login.clone()
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancel.clone()
    }
}

/// The Postgres port of a run, on its own threads; dropped, it stops.
pub struct PgServer {
    pub address: SocketAddr,
    _running: Background,
}

impl PgServer {
    /// Binds `address` (port 0 picks one) and serves until dropped; with `tls`, clients may
    /// (and `sslmode=require` clients will) switch to TLS first.
    pub fn start(
        address: SocketAddr,
        state: Arc<ServerState>,
        tls: Option<TlsAcceptor>,
    ) -> std::io::Result<PgServer> {
        let runtime = background::runtime("vibelux-pg")?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind(address))?;
        let address = listener.local_addr()?;
        let connections = Arc::new(ConnectionManager::new());
        let handlers = Arc::new(Handlers {
            login: Arc::new(Login::new(state.clone(), connections.clone())),
            queries: Arc::new(Queries::new(state)),
            cancel: Arc::new(DefaultCancelHandler::new(connections)),
        });
        let serve = accept_each(listener, "Postgres", move |stream, _| {
            let (handlers, tls) = (handlers.clone(), tls.clone());
            async move {
                if let Err(error) = pgwire::tokio::process_socket(stream, tls, handlers).await {
                    tracing::debug!(%error, "a Postgres connection ended");
                }
            }
        });
        Ok(PgServer {
            address,
            _running: Background::spawn("vibelux-pg", runtime, serve)?,
        })
    }
}
