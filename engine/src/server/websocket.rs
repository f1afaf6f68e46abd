//! The WebSocket side of a subscription: the HTTP handshake, and the frames a client sends.
//!
//! Axum's WebSocket type owns its connection and frames each message per socket; the live
//! views' fan-out instead writes one round's pre-framed bytes into thousands of sockets (see
//! `live::fanout`). So the upgrade is done here, the connection is taken back from hyper as the
//! plain TCP stream it is (the server runs connections on `TokioIo<TcpStream>`, see
//! `server::Server`), and its sending end is shared through an `Outlet`. What clients send —
//! pings, close frames — is read here; a subscriber has nothing else to say.

use std::io::Cursor;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, OpCode};

/// A request to open a WebSocket, checked and not yet answered.
pub struct WebSocketRequest {
    key: HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

fn refuse(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": message })),
    )
        .into_response()
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketRequest {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
        if parts.method != Method::GET {
            return Err(refuse(
                "a subscription is a WebSocket: use GET with Upgrade: websocket",
            ));
        }
        if !header_has(&parts.headers, header::CONNECTION, "upgrade")
            || !header_has(&parts.headers, header::UPGRADE, "websocket")
        {
            return Err(refuse(
                "a subscription is a WebSocket: send Connection: Upgrade and Upgrade: websocket",
            ));
        }
        if !header_has(&parts.headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return Err(refuse(
                "only WebSocket version 13 is spoken (Sec-WebSocket-Version: 13)",
            ));
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .cloned()
            .ok_or_else(|| refuse("the WebSocket handshake has no Sec-WebSocket-Key"))?;
        let on_upgrade = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or_else(|| refuse("this connection cannot be upgraded to a WebSocket"))?;
        Ok(WebSocketRequest { key, on_upgrade })
    }
}

impl WebSocketRequest {
    /// Answers `101 Switching Protocols`; once the client has it, `open` runs with the
    /// connection and whatever the client sent after its request.
    pub fn accept<F, Fut>(self, open: F) -> Response
    where
        F: FnOnce(Arc<TcpStream>, Bytes) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept = tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    tracing::debug!(%error, "WebSocket upgrade failed");
                    return;
                }
            };
            match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => open(Arc::new(parts.io.into_inner()), parts.read_buf).await,
                Err(_) => tracing::error!(
                    "a WebSocket connection is not a plain TCP stream; it was closed"
                ),
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept)
            .body(axum::body::Body::empty())
            .expect("a valid response")
    }
}

/// What a client said.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame {
    /// A ping, to be answered with this payload.
    Ping(Bytes),
    /// The client closes the connection (or it broke, or sent what is not WebSocket).
    Close,
    /// Anything else: a subscriber's messages mean nothing to the server.
    Other,
}

/// The largest frame a client may send: subscribers only ping and close.
const LARGEST_FRAME: u64 = 64 * 1024;

/// Reads frames from a client, keeping partial ones between reads.
pub struct ClientFrames {
    buffer: BytesMut,
}

impl ClientFrames {
    /// Starts with what hyper read past the handshake.
    pub fn new(already_read: Bytes) -> Self {
        ClientFrames {
            buffer: BytesMut::from(&already_read[..]),
        }
    }

    /// Reads what the socket has (after `readable()` said so) and returns the complete frames.
    pub fn read(&mut self, socket: &TcpStream) -> Vec<ClientFrame> {
        let mut chunk = [0u8; 4096];
        loop {
            match socket.try_read(&mut chunk) {
                Ok(0) => return vec![ClientFrame::Close],
                Ok(read) => self.buffer.extend_from_slice(&chunk[..read]),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return vec![ClientFrame::Close],
            }
        }
        self.frames()
    }

    /// Takes `bytes` as if read from the socket; returns the frames they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<ClientFrame> {
        self.buffer.extend_from_slice(bytes);
        self.frames()
    }

    /// The complete frames in the buffer.
    fn frames(&mut self) -> Vec<ClientFrame> {
        let mut frames = Vec::new();
        loop {
            let mut cursor = Cursor::new(&self.buffer[..]);
            let (header, length) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return frames,
                Err(_) => {
                    frames.push(ClientFrame::Close);
                    return frames;
                }
            };
            if length > LARGEST_FRAME {
                frames.push(ClientFrame::Close);
                return frames;
            }
            let start = cursor.position() as usize;
            let end = start + length as usize;
            if self.buffer.len() < end {
                return frames;
            }
            self.buffer.advance(start);
            let mut payload = self.buffer.split_to(length as usize);
            if let Some(mask) = header.mask {
                for (i, byte) in payload.iter_mut().enumerate() {
                    *byte ^= mask[i % 4];
                }
            }
            frames.push(match header.opcode {
                OpCode::Control(Control::Ping) => ClientFrame::Ping(payload.freeze()),
                OpCode::Control(Control::Close) => ClientFrame::Close,
                _ => ClientFrame::Other,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    #[test]
    fn client_frames_are_unmasked_and_may_arrive_in_pieces() {
        let mut bytes = masked(0x1, b"hello");
        bytes.extend(masked(0x9, b"are you there"));
        bytes.extend(masked(0x8, &[0x03, 0xe8]));
        let (first, rest) = bytes.split_at(9);
        let mut frames = ClientFrames::new(Bytes::copy_from_slice(first));
        assert_eq!(frames.frames(), vec![]);
        frames.buffer.extend_from_slice(rest);
        assert_eq!(
            frames.frames(),
            vec![
                ClientFrame::Other,
                ClientFrame::Ping(Bytes::from_static(b"are you there")),
                ClientFrame::Close
            ]
        );
    }

    #[test]
    fn oversized_frames_close_the_connection() {
        let mut frames = ClientFrames::new(Bytes::from_static(&[
            0x81, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4,
        ]));
        assert_eq!(frames.frames(), vec![ClientFrame::Close]);
    }
}
