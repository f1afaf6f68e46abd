//! Resuming a file reader where a checkpoint left it.
//!
//! A checkpoint records the file (device and inode), the byte offset of the first line not yet
//! complete and the line count before it, and a CSV file's header mapping (the header is not
//! read again). A replay resumes only in the very file it read: one replaced or cut short since
//! cannot continue the same input, and reading it from the start would repeat rows the
//! checkpoint already holds. A followed file that was rotated or truncated while the engine was
//! down is read from its start, as it would have been had the engine been running.

use std::io::{Seek, SeekFrom};
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::follow::FileIdentity;
use super::source::{FilePosition, FileReader};

/// What a checkpoint keeps of a file reader.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpointed {
    position: FilePosition,
    csv_header: Option<Vec<Option<usize>>>,
}

impl FileReader {
    /// The reader's position, encoded for a checkpoint.
    pub(super) fn checkpoint(&self) -> Vec<u8> {
        serde_json::to_vec(&Checkpointed {
            position: self.position(),
            csv_header: self.csv_header.clone(),
        })
        .expect("a file position serializes")
    }

    /// Moves a freshly opened reader to a checkpointed position.
    pub fn resume(&mut self, checkpoint: &[u8]) -> Result<(), String> {
        let checkpointed = self.decode_checkpoint(checkpoint)?;
        self.resume_at(checkpointed)
    }

    /// Resumes from the positions of a checkpoint taken with another number of workers (one
    /// per old worker): reading starts at the earliest of them, and skips the lines the old
    /// worker they belonged to had read already, so every line is taken exactly once.
    pub fn resume_rescaled(&mut self, checkpoints: &[Vec<u8>]) -> Result<(), String> {
        let positions: Vec<Checkpointed> = checkpoints
            .iter()
            .map(|checkpoint| self.decode_checkpoint(checkpoint))
            .collect::<Result<_, _>>()?;
        let read_up_to: Vec<u64> = positions
            .iter()
            .map(|checkpointed| checkpointed.position.line_number)
            .collect();
        let earliest = positions
            .into_iter()
            .min_by_key(|checkpointed| checkpointed.position.offset)
            .ok_or("a checkpoint without positions")?;
        self.resume_at(earliest)?;
        // (A followed file replaced while the engine was down is read from its start: the old
        // file's lines say nothing about it.)
        if self.offset > 0 || self.line_number > 0 {
            self.taken_before = Some((read_up_to.len(), read_up_to));
        }
        Ok(())
    }

    fn decode_checkpoint(&self, checkpoint: &[u8]) -> Result<Checkpointed, String> {
        let path = self.config.path.display();
        serde_json::from_slice(checkpoint)
            .map_err(|error| format!("cannot read the checkpointed position in {path}: {error}"))
    }

    fn resume_at(&mut self, checkpointed: Checkpointed) -> Result<(), String> {
        let path = self.config.path.display().to_string();
        let Checkpointed {
            position,
            csv_header,
        } = checkpointed;
        let same_file = FileIdentity {
            device: position.device,
            inode: position.inode,
        } == self.identity;
        let length = self
            .input
            .get_ref()
            .metadata()
            .map_err(|error| format!("{path}: {error}"))?
            .len();
        let problem = if !same_file {
            Some("it is not the file the checkpoint read (it was replaced)")
        } else if length < position.offset {
            Some("it is shorter than where the checkpoint left it (it was truncated)")
        } else {
            None
        };
        if let Some(problem) = problem {
            if self.config.follow {
                tracing::info!(%path, "reading from its start: {problem} while the engine was stopped");
                return Ok(());
            }
            return Err(format!(
                "cannot resume reading {path}: {problem}. Start afresh with another --state \
                 directory, or restore the file"
            ));
        }
        self.input
            .seek(SeekFrom::Start(position.offset))
            .map_err(|error| format!("{path}: {error}"))?;
        self.offset = position.offset;
        self.line_number = position.line_number;
        self.csv_header = csv_header;
        if let Some(progress) = &self.progress {
            progress
                .bytes_read
                .fetch_add(position.offset, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::file::source::{FileFormat, FileSourceConfig};
    use crate::source::{Poll, Record, SourceReader};

    fn reader(path: &std::path::Path, format: FileFormat) -> FileReader {
        let config = FileSourceConfig {
            path: path.to_path_buf(),
            format,
            follow: false,
        };
        let layout = crate::file::source::tests::layout();
        FileReader::open(config, layout, 0, 1, Default::default()).unwrap()
    }

    fn rows(reader: &mut FileReader, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        let _ = reader.poll(&mut out, max);
        out.into_iter()
            .map(|record| match record {
                Record::Row { row, .. } => format!("{row:?}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_resumed_reader_returns_exactly_what_would_have_come_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        let mut file = std::fs::File::create(&path).unwrap();
        writeln!(file, "ts,id").unwrap();
        for i in 0..10 {
            writeln!(file, "2024-01-01T00:00:0{i}Z,s{i}").unwrap();
        }
        drop(file);
        let mut whole = reader(&path, FileFormat::Csv);
        let all = rows(&mut whole, 100);
        assert_eq!(all.len(), 10);

        let mut first = reader(&path, FileFormat::Csv);
        let head = rows(&mut first, 4);
        let position = SourceReader::position(&first).unwrap();
        let mut second = reader(&path, FileFormat::Csv);
        second.resume(&position).unwrap();
        let mut tail = Vec::new();
        loop {
            let mut out = Vec::new();
            let poll = second.poll(&mut out, 3);
            tail.extend(out.into_iter().map(|record| match record {
                Record::Row { row, .. } => format!("{row:?}"),
                other => format!("{other:?}"),
            }));
            if poll == Poll::Finished {
                break;
            }
        }
        assert_eq!([head, tail].concat(), all);
    }

    #[test]
    fn a_replay_refuses_to_resume_in_a_replaced_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "{}\n{}\n").unwrap();
        let mut first = reader(&path, FileFormat::Json);
        let _ = rows(&mut first, 1);
        let position = SourceReader::position(&first).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "{}\n").unwrap();
        let error = reader(&path, FileFormat::Json)
            .resume(&position)
            .unwrap_err();
        assert!(error.contains("it was replaced"), "{error}");
    }
}
