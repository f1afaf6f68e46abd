//! Following a file by its path, as `tail -F` does: what the path names now, compared with the
//! file being read (rotated away, truncated, removed), and starting over on the new file.

use std::fs::{File, Metadata};
use std::io::{BufReader, ErrorKind, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;

use super::source::FileReader;
use crate::source::Record;

/// Which file a path named when it was opened: a rename puts another file at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileIdentity {
    pub(super) device: u64,
    pub(super) inode: u64,
}

impl FileIdentity {
    pub(super) fn of(metadata: &Metadata) -> Self {
        FileIdentity {
            device: metadata.dev(),
            inode: metadata.ino(),
        }
    }
}

/// What a followed path names now, compared with the file being read.
pub(super) enum PathState {
    /// The same file, at least as long as what was read.
    Unchanged,
    /// Another file is at the path (rotated, or saved by rename).
    Replaced(File, FileIdentity),
    /// The same file, shorter than what was read (truncated and rewritten).
    Truncated,
    /// The path cannot be looked at or opened now.
    Unreadable(String),
}

impl FileReader {
    /// Looks at what the followed path names now.
    pub(super) fn check_path(&self) -> PathState {
        let path = &self.config.path;
        let metadata = match std::fs::metadata(path) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == ErrorKind::NotFound => {
                return PathState::Unreadable(format!(
                    "{} was removed; waiting for a file at that path",
                    path.display()
                ));
            }
            Err(error) => {
                return PathState::Unreadable(format!(
                    "cannot look at {}: {error}",
                    path.display()
                ));
            }
        };
        if FileIdentity::of(&metadata) == self.identity {
            return if metadata.len() < self.offset {
                PathState::Truncated
            } else {
                PathState::Unchanged
            };
        }
        // Open what is there now and take its identity from the open file, in case the path
        // changed again in between.
        match File::open(path).and_then(|file| {
            let identity = FileIdentity::of(&file.metadata()?);
            Ok((file, identity))
        }) {
            Ok((file, identity)) => PathState::Replaced(file, identity),
            Err(error) => PathState::Unreadable(format!(
                "cannot open {} after it was replaced: {error}",
                path.display()
            )),
        }
    }

    /// Starts over at the beginning of the file at the path (a new one, or the same one
    /// truncated). The old file's last line, if it had no line ending, is complete now.
    pub(super) fn start_over(
        &mut self,
        replaced: Option<(File, FileIdentity)>,
        out: &mut Vec<Record>,
    ) {
        if !self.line.is_empty() {
            self.consume_line(out);
        }
        match replaced {
            Some((file, identity)) => {
                self.input = BufReader::with_capacity(1 << 20, file);
                self.identity = identity;
            }
            None => {
                if let Err(error) = self.input.seek(SeekFrom::Start(0)) {
                    // The next read fails the same way and is retried like any read error.
                    tracing::debug!(%error, "seeking to the start of a truncated file");
                }
            }
        }
        self.offset = 0;
        self.line_number = Some(0);
        self.csv_header = None;
        out.push(Record::Replaced {
            origin: self.config.path.display().to_string(),
        });
    }
}
