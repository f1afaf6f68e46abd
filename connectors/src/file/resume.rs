//! Resuming a file reader where a checkpoint left it.
//!
//! A checkpoint records the file (device and inode), the byte offset of the reader's next line
//! (and the line count before it, where the reader knows it), a replay's stripes, and a CSV
//! file's header mapping (the header is not read again). A replay resumes only in the very file
//! it read: one replaced or cut short since cannot continue the same input, and reading it from
//! the start would repeat rows the checkpoint already holds. A followed file that was rotated or
//! truncated while the engine was down is read from its start, as it would have been had the
//! engine been running.

use std::io::{Seek, SeekFrom};
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::follow::FileIdentity;
use super::source::{FilePosition, FileReader};
use super::stripes::Generation;

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
    /// per old worker) to a replay: it starts over in this worker's own stripes and skips the
    /// lines the old worker owning them had read (`stripes.rs`), so every line is taken exactly once.
    pub fn resume_rescaled(&mut self, checkpoints: &[Vec<u8>]) -> Result<(), String> {
        let positions: Vec<Checkpointed> = checkpoints
            .iter()
            .map(|checkpoint| self.decode_checkpoint(checkpoint))
            .collect::<Result<_, _>>()?;
        let Some(first) = positions.first() else {
            return Err("a checkpoint without positions".into());
        };
        if first.position.stripe == 0 {
            return Err(format!(
                "cannot resume reading {}: the checkpoint followed it (`follow`), this pipeline \
                 replays it",
                self.config.path.display()
            ));
        }
        let furthest = positions
            .iter()
            .map(|checkpointed| checkpointed.position.offset)
            .max()
            .unwrap_or(0);
        self.check_file(&first.position, furthest)?;
        let mut earlier: Vec<Generation> = Vec::new();
        for checkpointed in &positions {
            for generation in &checkpointed.position.earlier {
                if !earlier.contains(generation) {
                    earlier.push(generation.clone());
                }
            }
        }
        earlier.push(Generation {
            stripe: first.position.stripe,
            offsets: positions
                .iter()
                .map(|checkpointed| checkpointed.position.offset)
                .collect(),
        });
        // From the start (a CSV header is read again): the lines before an old worker's
        // offset in its stripes are skipped without being read.
        self.line_number = None;
        if let Some(stripes) = &mut self.stripes {
            stripes.earlier = earlier;
        }
        Ok(())
    }

    fn decode_checkpoint(&self, checkpoint: &[u8]) -> Result<Checkpointed, String> {
        let path = self.config.path.display();
        serde_json::from_slice(checkpoint)
            .map_err(|error| format!("cannot read the checkpointed position in {path}: {error}"))
    }

    /// Whether the file at the path is still the one the checkpoint read, at least `length`
    /// bytes long: an error for a replay; for a followed file, `Ok(false)` (read it from its
    /// start).
    fn check_file(&self, position: &FilePosition, length: u64) -> Result<bool, String> {
        let path = self.config.path.display().to_string();
        let same_file = FileIdentity {
            device: position.device,
            inode: position.inode,
        } == self.identity;
        let actual = self
            .input
            .get_ref()
            .metadata()
            .map_err(|error| format!("{path}: {error}"))?
            .len();
        let problem = if !same_file {
            "it is not the file the checkpoint read (it was replaced)"
        } else if actual < length {
            "it is shorter than where the checkpoint left it (it was truncated)"
        } else {
            return Ok(true);
        };
        if self.config.follow {
            tracing::info!(%path, "reading from its start: {problem} while the engine was stopped");
            return Ok(false);
        }
        Err(format!(
            "cannot resume reading {path}: {problem}. Start afresh with another --state \
             directory, or restore the file"
        ))
    }

    fn resume_at(&mut self, checkpointed: Checkpointed) -> Result<(), String> {
        let Checkpointed {
            position,
            csv_header,
        } = checkpointed;
        if !self.check_file(&position, position.offset)? {
            return Ok(());
        }
        let path = self.config.path.display();
        if let Some(stripes) = &mut self.stripes {
            if position.stripe == 0 {
                return Err(format!(
                    "cannot resume reading {path}: the checkpoint followed it (`follow`), \
                     this pipeline replays it"
                ));
            }
            stripes.size = position.stripe;
            stripes.earlier = position.earlier;
        }
        self.input
            .seek(SeekFrom::Start(position.offset))
            .map_err(|error| format!("{path}: {error}"))?;
        self.offset = position.offset;
        self.line_number = position.line_number;
        // A reader that had not read its CSV header yet reads it now.
        if position.offset > 0 {
            self.csv_header = csv_header;
        }
        if let Some(progress) = &self.progress {
            let read = self.stripes.as_ref().map_or(position.offset, |stripes| {
                stripes.own_bytes_before(position.offset)
            });
            progress.bytes_read.fetch_add(read, Ordering::Relaxed);
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

    /// Ids of the rows `reader` gives, at most `max` records.
    fn ids(reader: &mut FileReader, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < max {
            let before = out.len();
            let poll = reader.poll(&mut out, (max - before).min(50));
            if poll == Poll::Finished {
                break;
            }
        }
        out.into_iter()
            .map(|record| match record {
                Record::Row { row, .. } => row[0].to_string(),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_replay_stopped_by_some_workers_is_finished_by_another_number_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        writeln!(file, "ts,id").unwrap();
        // About 1.5 MB: stripes of 64 KiB or more, several per worker.
        let count = 40_000;
        for i in 0..count {
            writeln!(file, "2024-01-01T00:00:00Z,s{i}").unwrap();
        }
        drop(file);
        let open = |worker: usize, peers: usize| {
            let config = FileSourceConfig {
                path: path.clone(),
                format: FileFormat::Csv,
                follow: false,
            };
            let layout = crate::file::source::tests::layout();
            FileReader::open(config, layout, worker, peers, Default::default()).unwrap()
        };
        let mut seen: Vec<String> = Vec::new();
        // Two workers read some of their lines; three take over and stop; one finishes.
        let mut positions: Vec<Vec<u8>> = Vec::new();
        for (peers, shares) in [(2, vec![9_000, 3_000]), (3, vec![500, 7_000, 4_000])] {
            let mut next = Vec::new();
            for (worker, share) in shares.into_iter().enumerate() {
                let mut reader = open(worker, peers);
                if !positions.is_empty() {
                    reader.resume_rescaled(&positions).unwrap();
                }
                seen.extend(ids(&mut reader, share));
                next.push(SourceReader::position(&reader).unwrap());
            }
            positions = next;
        }
        let mut last = open(0, 1);
        last.resume_rescaled(&positions).unwrap();
        seen.extend(ids(&mut last, usize::MAX));
        let mut expected: Vec<String> = (0..count).map(|i| format!("s{i}")).collect();
        expected.sort();
        seen.sort();
        assert_eq!(seen.len(), count, "lines read twice or not at all");
        assert_eq!(seen, expected);
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
