//! Input bytes that are not UTF-8, made readable for dead letters.
//!
//! A gateway or serial bridge now and then garbles a byte. The dead letter must say where (so
//! someone can find the line in the file or the message in the broker's log) and keep the bytes
//! themselves, escaped, so the record is still readable and nothing of the original is lost.

/// Where bytes stop being UTF-8: `invalid byte 0xff at byte 17`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {} at byte {at}", if *.truncated { "truncated sequence" } else { "invalid byte" }, hex(.bytes))]
pub struct NotUtf8 {
    /// Offset of the first byte at fault.
    pub at: usize,
    /// The bytes at fault.
    pub bytes: Vec<u8>,
    /// The input ends inside a multi-byte character.
    pub truncated: bool,
}

fn hex(bytes: &[u8]) -> String {
    let shown: Vec<String> = bytes.iter().map(|byte| format!("0x{byte:02x}")).collect();
    shown.join(" ")
}

/// Decodes `bytes` as UTF-8, or says which bytes are at fault.
pub fn utf8(bytes: &[u8]) -> Result<&str, NotUtf8> {
    std::str::from_utf8(bytes).map_err(|error| {
        let at = error.valid_up_to();
        let span = error.error_len().unwrap_or(bytes.len() - at);
        NotUtf8 {
            at,
            bytes: bytes[at..at + span].to_vec(),
            truncated: error.error_len().is_none(),
        }
    })
}

/// The text of `bytes`, with every byte that is not part of a valid UTF-8 character written as
/// `\xNN` (and a backslash as `\\`, so the escaping can be undone).
pub fn escaped(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        text.push_str(&chunk.valid().replace('\\', "\\\\"));
        for byte in chunk.invalid() {
            text.push_str(&format!("\\x{byte:02x}"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stray_byte_is_named_by_its_offset_and_kept_escaped() {
        let line = b"{\"id\":\"a\xff\"}";
        assert_eq!(
            utf8(line).unwrap_err().to_string(),
            "invalid byte 0xff at byte 8"
        );
        assert_eq!(escaped(line), "{\"id\":\"a\\xff\"}");
    }

    #[test]
    fn a_sequence_cut_short_at_the_end_is_named_too() {
        let line = b"caf\xc3";
        assert_eq!(
            utf8(line).unwrap_err().to_string(),
            "truncated sequence 0xc3 at byte 3"
        );
        assert_eq!(escaped(line), "caf\\xc3");
    }

    #[test]
    fn valid_text_passes_and_backslashes_stay_unambiguous() {
        assert_eq!(utf8("café".as_bytes()).unwrap(), "café");
        assert_eq!(escaped(b"a\\xff"), "a\\\\xff");
    }
}
