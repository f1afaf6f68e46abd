//! TLS for the servers, from a PEM certificate chain and key (rustls with ring, the provider
//! the rest of the engine uses).
//!
//! The Postgres port hands its acceptor to pgwire. The HTTP server terminates TLS in front of
//! itself instead: each TLS connection is decrypted here and relayed over loopback to the plain
//! server, because live views' fan-out writes pre-framed bytes straight into subscribers' TCP
//! sockets from its sweeper threads, which a TLS session (a per-connection encryption state)
//! cannot share. The relay costs one loopback hop per connection; the plain server learns the
//! client's real address from [`TlsPeers`] for its audit trail.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use pgwire::tokio::TlsAcceptor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpSocket};

use super::background::accept_each;

/// Acceptors for the HTTP server and the Postgres port, from one certificate.
#[derive(Clone)]
pub struct TlsAcceptors {
    pub http: TlsAcceptor,
    pub pg: TlsAcceptor,
}

/// Reads `cert` (the chain, leaf first) and `key`.
pub fn acceptors(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptors> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("--tls-cert {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--tls-cert {}: not a PEM certificate chain", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("--tls-cert {}: holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("--tls-key {}: not a PEM private key", key.display()))?;
    let config = |protocol: &[u8]| -> anyhow::Result<TlsAcceptor> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())
            .context("--tls-cert and --tls-key do not make a usable pair")?;
        // Clients that name their protocol (HTTP/1.1; Postgres 17's direct TLS) get it.
        config.alpn_protocols = vec![protocol.to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    };
    Ok(TlsAcceptors {
        http: config(b"http/1.1")?,
        pg: config(b"postgresql")?,
    })
}

/// The real client of each relayed connection, by the loopback address the relay connected
/// from.
#[derive(Default, Clone)]
pub struct TlsPeers(Arc<Mutex<HashMap<SocketAddr, SocketAddr>>>);

impl TlsPeers {
    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, SocketAddr>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client behind a connection from `relay`, if it came through TLS.
    pub fn client(&self, relay: SocketAddr) -> Option<SocketAddr> {
        self.peers().get(&relay).copied()
    }
}

/// How long a client may take over the TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Accepts TLS connections on `listener` and relays each, decrypted, to the plain server at
/// `plain`.
pub async fn terminate(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    plain: SocketAddr,
    peers: TlsPeers,
) {
    accept_each(listener, "TLS", move |stream, client| {
        let (acceptor, peers) = (acceptor.clone(), peers.clone());
        async move {
            let mut secure = match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                Ok(Ok(secure)) => secure,
                Ok(Err(error)) => {
                    tracing::debug!(%error, %client, "a TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            // The relay's own address is known before it connects, so the plain server finds
            // the client as soon as it accepts.
            let relay = async {
                let socket = TcpSocket::new_v4()?;
                socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
                let local = socket.local_addr()?;
                peers.peers().insert(local, client);
                Ok::<_, std::io::Error>((socket.connect(plain).await, local))
            };
            let (connected, local) = match relay.await {
                Ok(relay) => relay,
                Err(error) => {
                    tracing::warn!(%error, "cannot relay a TLS connection");
                    return;
                }
            };
            if let Ok(mut inner) = connected {
                let _ = inner.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut secure, &mut inner).await;
            }
            peers.peers().remove(&local);
        }
    })
    .await
}
