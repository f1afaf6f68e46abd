//! A lean WebSocket subscriber for the fan-out benchmark.
//!
//! Ten thousand subscribers share the machine with the engine they measure, so each must cost
//! as little as a client can: this one does the opening handshake (checked, as any client
//! would), then reads frames straight off the socket into one buffer and hands out each text
//! message's bytes. The server never masks, fragments or pings, so that is all it needs;
//! anything else is an error. Over `wss://` it speaks TLS first (rustls), as a browser would,
//! so the benchmark can say what HTTPS adds.

use std::sync::Arc;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

const KEY: &str = "dmlicmVsdXgtYmVuY2gta2V5";

/// A plain or TLS connection.
trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// A TLS client that trusts the CA certificate in `ca` (PEM) alone.
pub fn tls_client(ca: &std::path::Path) -> anyhow::Result<TlsConnector> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for certificate in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        roots.add(certificate?)?;
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

pub struct Subscriber {
    stream: Box<dyn Connection>,
    buffer: Vec<u8>,
    /// Where the unread part of `buffer` starts.
    start: usize,
}

impl Subscriber {
    /// Opens `ws://{address}{path}`, or `wss://` with `tls`.
    pub async fn connect(
        address: &str,
        path: &str,
        tls: Option<&TlsConnector>,
    ) -> anyhow::Result<Subscriber> {
        let tcp = TcpStream::connect(address)
            .await
            .with_context(|| format!("connecting to {address}"))?;
        tcp.set_nodelay(true)?;
        let mut stream: Box<dyn Connection> = match tls {
            None => Box::new(tcp),
            Some(connector) => {
                let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
                let name = ServerName::try_from(host.to_string())?;
                Box::new(
                    connector
                        .connect(name, tcp)
                        .await
                        .context("TLS handshake")?,
                )
            }
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        stream.flush().await?;
        let mut buffer = Vec::with_capacity(8192);
        let head_end = loop {
            if stream.read_buf(&mut buffer).await? == 0 {
                bail!("the server closed the connection during the handshake");
            }
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
        let expected = derive_accept_key(KEY.as_bytes());
        let accepted = head.lines().any(|line| {
            line.split_once(':').is_some_and(|(name, value)| {
                name.eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == expected
            })
        });
        if !head.starts_with("HTTP/1.1 101") || !accepted {
            bail!("the server refused the WebSocket: {head}");
        }
        Ok(Subscriber {
            stream,
            buffer,
            start: head_end,
        })
    }

    /// The next text message; `None` once the server closes.
    pub async fn next_text(&mut self) -> anyhow::Result<Option<&[u8]>> {
        loop {
            if let Some((opcode, payload)) = self.frame()? {
                match opcode {
                    0x1 => return Ok(Some(&self.buffer[payload.0..payload.1])),
                    0x8 => return Ok(None),
                    _ => continue,
                }
            }
            // Keep the unread tail at the front, then read more (in 8 KiB reads at least: a
            // full Vec grows by only 64 bytes per read).
            self.buffer.drain(..self.start);
            self.start = 0;
            self.buffer.reserve(8192);
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// The next complete frame in the buffer (opcode, payload range), consumed.
    fn frame(&mut self) -> anyhow::Result<Option<(u8, (usize, usize))>> {
        let unread = &self.buffer[self.start..];
        if unread.len() < 2 {
            return Ok(None);
        }
        let (first, second) = (unread[0], unread[1]);
        if first & 0x80 == 0 || second & 0x80 != 0 {
            bail!("a fragmented or masked frame from the server");
        }
        let (header, length) = match second & 0x7f {
            126 if unread.len() >= 4 => (4, u16::from_be_bytes([unread[2], unread[3]]) as usize),
            127 if unread.len() >= 10 => (
                10,
                u64::from_be_bytes(unread[2..10].try_into().expect("8 bytes")) as usize,
            ),
            126 | 127 => return Ok(None),
            short => (2, short as usize),
        };
        if unread.len() < header + length {
            return Ok(None);
        }
        let payload = (self.start + header, self.start + header + length);
        self.start = payload.1;
        Ok(Some((first & 0x0f, payload)))
    }
}
