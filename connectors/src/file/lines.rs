//! Line numbers for a reader that does not read every line.
//!
//! A worker reading its own stripes of a file (`stripes.rs`) skips the lines before them, so it
//! cannot count lines as it goes. A dead letter must still say which line it came from, the same
//! whatever the number of workers: this counts the line endings before it, reading from where it
//! last counted (a worker's lines come in file order). Only dead letters ask, so a clean file is
//! never read twice; a file with bad lines all through it is read once more, by `memchr` speed.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;

pub struct LineCounter {
    input: Option<BufReader<File>>,
    /// Bytes counted so far, and the line endings among them.
    counted: u64,
    endings: u64,
}

impl LineCounter {
    pub fn new() -> LineCounter {
        LineCounter {
            input: None,
            counted: 0,
            endings: 0,
        }
    }

    /// The number (from 1) of the line starting at byte `start` of the file at `path`.
    pub fn line_at(&mut self, path: &Path, start: u64) -> std::io::Result<u64> {
        if start < self.counted || self.input.is_none() {
            let mut input = BufReader::with_capacity(1 << 16, File::open(path)?);
            input.seek(SeekFrom::Start(0))?;
            self.input = Some(input);
            self.counted = 0;
            self.endings = 0;
        }
        let input = self.input.as_mut().expect("opened above");
        while self.counted < start {
            let buffer = input.fill_buf()?;
            if buffer.is_empty() {
                break;
            }
            let take = buffer.len().min((start - self.counted) as usize);
            self.endings += memchr::memchr_iter(b'\n', &buffer[..take]).count() as u64;
            input.consume(take);
            self.counted += take as u64;
        }
        Ok(self.endings + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_counted_from_wherever_the_last_count_ended() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "a\nbb\n\nccc\nd\n").unwrap();
        let mut counter = LineCounter::new();
        assert_eq!(counter.line_at(file.path(), 0).unwrap(), 1);
        assert_eq!(counter.line_at(file.path(), 5).unwrap(), 3);
        assert_eq!(counter.line_at(file.path(), 10).unwrap(), 5);
        // Asked for an earlier line, it counts again from the start.
        assert_eq!(counter.line_at(file.path(), 2).unwrap(), 2);
    }
}
