//! The journal of received MQTT messages: what makes acknowledging a QoS 1 message safe in a
//! checkpointed run.
//!
//! A broker lets few messages go unacknowledged (Mosquitto: 20 per client), so the engine
//! cannot hold acknowledgements until a checkpoint (10 s) without stalling ingest. Instead the
//! client thread appends each message to this journal, syncs a batch to disk, and only then
//! acknowledges the batch: from then on the journal, not the broker, keeps it. Each message
//! gets a sequence number; a worker's checkpointed position is the last number it took in, and
//! a restarted run hands every worker the journaled messages after its position before any new
//! one. Segments whose messages every worker's stored checkpoint has passed are deleted.
//!
//! On disk: `journal-<first sequence>.log` segments of records `length (u32) | xxHash64 (u64) |
//! bincode (sequence, topic, payload, received, QoS)`. A record torn by a crash (never synced,
//! so never acknowledged) fails its length or checksum, and the journal ends before it.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A segment is closed and a new one started beyond this size.
const SEGMENT_BYTES: u64 = 16 << 20;

/// One received message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub sequence: u64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub received_nanos: i64,
    pub qos: u8,
}

pub struct Journal {
    directory: PathBuf,
    /// Each segment's first sequence number, oldest first; the last is being written.
    segments: Vec<u64>,
    writer: BufWriter<File>,
    written: u64,
    next_sequence: u64,
    /// Appended since the last sync.
    unsynced: bool,
}

fn segment_path(directory: &Path, first: u64) -> PathBuf {
    directory.join(format!("journal-{first:020}.log"))
}

impl Journal {
    /// Opens (creating) the journal in `directory`; returns it with every entry it holds, oldest
    /// first, for the workers that have not taken them in yet.
    pub fn open(directory: &Path) -> std::io::Result<(Journal, Vec<JournalEntry>)> {
        std::fs::create_dir_all(directory)?;
        let mut segments: Vec<u64> = std::fs::read_dir(directory)?
            .filter_map(|entry| {
                entry
                    .ok()?
                    .file_name()
                    .to_str()?
                    .strip_prefix("journal-")?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()
            })
            .collect();
        segments.sort_unstable();
        let mut entries = Vec::new();
        let mut empty = Vec::new();
        for &first in &segments {
            let before = entries.len();
            read_segment(&segment_path(directory, first), &mut entries)?;
            if entries.len() == before {
                empty.push(first);
            }
        }
        // A segment without a whole record (created just before a crash) goes.
        for first in &empty {
            std::fs::remove_file(segment_path(directory, *first))?;
        }
        segments.retain(|first| !empty.contains(first));
        let next_sequence = entries.last().map_or(
            empty.last().copied().unwrap_or(1),
            |entry: &JournalEntry| entry.sequence + 1,
        );
        // Appends go to a new segment: the last one may end in a torn record.
        segments.push(next_sequence);
        let file = create_segment(directory, next_sequence)?;
        Ok((
            Journal {
                directory: directory.to_path_buf(),
                segments,
                writer: BufWriter::with_capacity(1 << 16, file),
                written: 0,
                next_sequence,
                unsynced: false,
            },
            entries,
        ))
    }

    /// Appends a message (written out at the next [`Journal::sync`]); returns its number.
    pub fn append(
        &mut self,
        topic: &str,
        payload: &[u8],
        received_nanos: i64,
        qos: u8,
    ) -> std::io::Result<u64> {
        let sequence = self.next_sequence;
        let entry = JournalEntry {
            sequence,
            topic: topic.to_string(),
            payload: payload.to_vec(),
            received_nanos,
            qos,
        };
        let body = bincode::serialize(&entry).map_err(std::io::Error::other)?;
        let checksum = twox_hash::XxHash64::oneshot(0, &body);
        self.writer.write_all(&(body.len() as u32).to_le_bytes())?;
        self.writer.write_all(&checksum.to_le_bytes())?;
        self.writer.write_all(&body)?;
        self.written += 12 + body.len() as u64;
        self.next_sequence += 1;
        self.unsynced = true;
        Ok(sequence)
    }

    /// Makes everything appended durable; then it may be acknowledged.
    pub fn sync(&mut self) -> std::io::Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        self.writer.flush()?;
        self.writer.get_ref().sync_data()?;
        self.unsynced = false;
        if self.written >= SEGMENT_BYTES {
            let file = create_segment(&self.directory, self.next_sequence)?;
            self.writer = BufWriter::with_capacity(1 << 16, file);
            self.segments.push(self.next_sequence);
            self.written = 0;
        }
        Ok(())
    }

    /// Deletes the segments holding only messages numbered at most `taken` (every worker's
    /// stored checkpoint has passed them).
    pub fn forget_through(&mut self, taken: u64) {
        while self.segments.len() > 1 && self.segments[1] <= taken + 1 {
            let first = self.segments.remove(0);
            if let Err(error) = std::fs::remove_file(segment_path(&self.directory, first)) {
                tracing::warn!(%error, "deleting a journal segment");
            }
        }
    }
}

fn create_segment(directory: &Path, first: u64) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(directory, first))?;
    if let Ok(handle) = File::open(directory) {
        let _ = handle.sync_all();
    }
    Ok(file)
}

/// Reads a segment's records up to the first that is torn.
fn read_segment(path: &Path, entries: &mut Vec<JournalEntry>) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut at = 0;
    while at + 12 <= bytes.len() {
        let length = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let checksum = u64::from_le_bytes(bytes[at + 4..at + 12].try_into().expect("8 bytes"));
        let Some(body) = bytes.get(at + 12..at + 12 + length) else {
            break;
        };
        if length == 0 || twox_hash::XxHash64::oneshot(0, body) != checksum {
            break;
        }
        match bincode::deserialize::<JournalEntry>(body) {
            Ok(entry) => entries.push(entry),
            Err(_) => break,
        }
        at += 12 + length;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reopened_journal_holds_what_was_synced_and_ends_before_a_torn_record() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, entries) = Journal::open(dir.path()).unwrap();
        assert!(entries.is_empty());
        for i in 0..5 {
            journal
                .append("site/r1", format!("{{\"seq\":{i}}}").as_bytes(), i, 1)
                .unwrap();
        }
        journal.sync().unwrap();
        drop(journal);
        // A crash in the middle of the next record's write.
        let segment = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .max()
            .unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&segment)
            .unwrap();
        file.write_all(&[40, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(file);
        let (mut journal, entries) = Journal::open(dir.path()).unwrap();
        let sequences: Vec<u64> = entries.iter().map(|entry| entry.sequence).collect();
        assert_eq!(sequences, vec![1, 2, 3, 4, 5]);
        assert_eq!(entries[2].payload, b"{\"seq\":2}");
        assert_eq!(journal.append("t", b"x", 0, 1).unwrap(), 6);
        journal.sync().unwrap();
        // Everything passed by every worker's checkpoint: the old segment goes.
        journal.forget_through(5);
        let (_, entries) = Journal::open(dir.path()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].sequence, 6);
    }
}
