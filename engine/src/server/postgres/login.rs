//! Who connects to the Postgres port: the token is the password (any user name; the token
//! names who acts), checked against the same tokens file as the HTTP API. Without `--auth`
//! the port serves loopback only and asks for nothing, as the HTTP server does.
//!
//! The password travels in the clear inside the connection: use TLS (`--tls-cert`) for
//! anything beyond loopback; Postgres clients then verify the server (`sslmode=verify-full`).

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::Sink;
use pgwire::api::auth::driver::AuthOutcome;
use pgwire::api::auth::mechanism::{AuthMechanism, AuthState};
use pgwire::api::auth::{
    AuthDriver, DefaultServerParameterProvider, StartupHandler, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{ClientInfo, ConnectionManager};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::{Authentication, PasswordMessageFamily};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::user_error;
use crate::auth::{Identity, TokenStore};
use crate::server::ServerState;
use crate::server::audit::{AuditEntry, Peer};
use crate::server::guard::Caller;

/// Asks for the token as a password and checks it.
struct TokenPassword {
    tokens: Arc<TokenStore>,
}

#[async_trait]
impl AuthMechanism<Identity> for TokenPassword {
    async fn begin(
        &mut self,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> PgWireResult<AuthState<Identity>> {
        Ok(AuthState::InProgress(Authentication::CleartextPassword))
    }

    async fn next(
        &mut self,
        _client: &(dyn ClientInfo + Send + Sync),
        message: PasswordMessageFamily,
    ) -> PgWireResult<AuthState<Identity>> {
        let password = message.into_password()?;
        Ok(match self.tokens.identify(password.password.trim()) {
            Some(identity) => AuthState::Ok {
                final_message: None,
                identity: Some(identity),
            },
            None => AuthState::Failed(user_error(
                "28P01",
                "the password is not a valid token: create one with `vibelux auth token --name NAME --role ROLE`"
                    .to_string(),
            )),
        })
    }
}

pub struct Login {
    driver: AuthDriver<DefaultServerParameterProvider, Identity>,
    state: Arc<ServerState>,
}

impl Login {
    pub fn new(state: Arc<ServerState>, connections: Arc<ConnectionManager>) -> Login {
        let mut parameters = DefaultServerParameterProvider::default();
        // Clients read this to decide what they may send; ours speaks the protocol of 14.
        parameters.server_version = format!("14.0 (vibelux {})", env!("CARGO_PKG_VERSION"));
        parameters.time_zone = "UTC".into();
        Login {
            driver: AuthDriver::new(parameters).with_connection_manager(connections),
            state,
        }
    }

    fn record(
        &self,
        client: &impl ClientInfo,
        actor: &str,
        identity: Option<&Identity>,
        outcome: &str,
        detail: &str,
    ) {
        self.state.audit(AuditEntry {
            actor,
            role: identity.map(|identity| identity.role),
            action: "postgres login",
            target: client.metadata().get("user").map_or("", String::as_str),
            outcome,
            detail,
            peer: Some(Peer(client.socket_addr())),
        });
    }
}

/// The caller a connection authenticated as (kept in its session).
pub fn caller(client: &impl ClientInfo) -> Caller {
    client
        .session_extensions()
        .get::<Caller>()
        .map_or(Caller::Local, |caller| caller.as_ref().clone())
}

#[async_trait]
impl StartupHandler for Login {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                match &self.state.access.tokens {
                    None => {
                        client.session_extensions().insert(Caller::Local);
                        self.driver.complete_authentication(client, None).await
                    }
                    Some(tokens) => {
                        let mechanism = Box::new(TokenPassword {
                            tokens: tokens.clone(),
                        });
                        match self.driver.begin_authentication(client, mechanism).await? {
                            AuthOutcome::InProgress => Ok(()),
                            AuthOutcome::Authenticated { .. } => Err(user_error(
                                "28000",
                                "authentication ended before a password".into(),
                            )),
                        }
                    }
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                match self.driver.advance_authentication(client, message).await {
                    Ok(AuthOutcome::Authenticated {
                        identity: Some(identity),
                        final_message,
                    }) => {
                        if let Some(audit) = &self.state.audit
                            && audit.first_use(&identity.name)
                        {
                            self.record(
                                client,
                                &identity.name,
                                Some(&identity),
                                "ok",
                                "first use in this run",
                            );
                        }
                        client.session_extensions().insert(Caller::Token(identity));
                        self.driver
                            .complete_authentication(client, final_message)
                            .await
                    }
                    Ok(AuthOutcome::Authenticated { identity: None, .. }) => {
                        Err(user_error("28000", "no identity".into()))
                    }
                    Ok(AuthOutcome::InProgress) => Ok(()),
                    Err(error) => {
                        self.state.access.refused("token");
                        self.record(client, "anonymous", None, "refused", &error.to_string());
                        Err(error)
                    }
                }
            }
            _ => Ok(()),
        }
    }
}
