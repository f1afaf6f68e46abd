//! WebSocket frames as bytes, ready for the socket.
//!
//! A server's frames are not masked, so one encoding of a message is exactly what every
//! subscriber's socket receives: a round's changes are framed once and the same bytes are
//! written to thousands of sockets (see `live::fanout`).

use bytes::Bytes;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

fn frame(opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) {
    let header = FrameHeader {
        is_final: true,
        opcode,
        mask: None,
        ..FrameHeader::default()
    };
    out.reserve(header.len(payload.len() as u64) + payload.len());
    header
        .format(payload.len() as u64, out)
        .expect("writing to a Vec cannot fail");
    out.extend_from_slice(payload);
}

/// Appends one text message.
pub fn push_text(text: &str, out: &mut Vec<u8>) {
    frame(OpCode::Data(Data::Text), text.as_bytes(), out);
}

/// One text message.
pub fn text(text: &str) -> Bytes {
    let mut out = Vec::new();
    push_text(text, &mut out);
    out.into()
}

/// A close frame with a status code and a reason (cut to fit a control frame's 125 bytes).
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = u16::from(CloseCode::from(code)).to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    let mut out = Vec::new();
    frame(OpCode::Control(Control::Close), &payload, &mut out);
    out.into()
}

/// The reply to a client's ping.
pub fn pong(payload: &[u8]) -> Bytes {
    let mut out = Vec::new();
    frame(OpCode::Control(Control::Pong), payload, &mut out);
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_length() {
        assert_eq!(&text("hi")[..], b"\x81\x02hi");
        let long = "x".repeat(300);
        let framed = text(&long);
        assert_eq!(&framed[..4], &[0x81, 126, 1, 44]);
        assert_eq!(framed.len(), 304);
        assert_eq!(&close(1008, "why")[..], b"\x88\x05\x03\xf0why");
        let reason = "é".repeat(100);
        let closing = close(1000, &reason);
        assert!(closing.len() <= 2 + 125);
        assert!(std::str::from_utf8(&closing[4..]).is_ok());
    }
}
