//! Cutting checkpoint parts into content-defined chunks, so that a checkpoint stores only what
//! changed since the last one.
//!
//! A part is a serialized operator, source or sink state; between two checkpoints most of a
//! large part is often the same (a table's rows, a join side, the detectors of quiet sensors),
//! but not at the same offsets: a group added early in the serialization shifts everything
//! after it. Cutting at fixed offsets would then change every chunk. Cutting where a rolling
//! hash of the last bytes hits a pattern (a "gear" hash, as FastCDC does) puts the cuts at the
//! same content wherever it moved, so unchanged stretches make unchanged chunks. Chunks are
//! named by a 128-bit hash of their bytes and stored once; a checkpoint lists its chunks.

/// Chunks are never smaller than this (except a part's last)...
const MIN: usize = 256 << 10;
/// ...average about this (each new chunk is a file to sync: not too many)...
const AVERAGE_BITS: u32 = 20; // 1 MiB
/// ...and never larger than this.
const MAX: usize = 4 << 20;

/// 256 pseudo-random words for the gear hash, from a fixed seed: the same cuts in every build.
fn gear() -> &'static [u64; 256] {
    static GEAR: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    GEAR.get_or_init(|| {
        // splitmix64
        let mut state: u64 = 0x5649_4245_4c55_5843; // "VIBELUXC"
        let mut table = [0u64; 256];
        for entry in table.iter_mut() {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            *entry = z ^ (z >> 31);
        }
        table
    })
}

/// The mask a chunk's end hash must clear.
fn mask() -> u64 {
    ((1u64 << AVERAGE_BITS) - 1) << (64 - AVERAGE_BITS)
}

/// Scans on from a chunk's `filled` bytes, whose rolling hash is `hash`, through `data`: the
/// number of bytes of `data` that end the chunk, or `None` if all of it belongs to the chunk
/// (which may then go on). The one rule both [`cut_points`] and [`Chunker`] follow, so a part
/// cut whole and a part cut as it is encoded are cut at the same places.
fn scan(hash: &mut u64, filled: usize, data: &[u8]) -> Option<usize> {
    let gear = gear();
    let mask = mask();
    let room = MAX - filled;
    for (offset, byte) in data[..data.len().min(room)].iter().enumerate() {
        *hash = (*hash << 1).wrapping_add(gear[*byte as usize]);
        // The first MIN bytes only feed the hash: no cut there.
        if filled + offset >= MIN && *hash & mask == 0 {
            return Some(offset + 1);
        }
    }
    (data.len() >= room).then_some(room)
}

/// Where `data` is cut: the end offset of each chunk.
pub fn cut_points(data: &[u8]) -> Vec<usize> {
    let mut ends = Vec::with_capacity(data.len() / (1 << AVERAGE_BITS) + 1);
    let mut start = 0;
    while start < data.len() {
        let mut hash = 0;
        match scan(&mut hash, 0, &data[start..]) {
            Some(cut) => start += cut,
            None => start = data.len(),
        }
        ends.push(start);
    }
    ends
}

/// Cuts bytes into chunks as they are written, for a part encoded straight into storage: at
/// most one chunk (4 MiB) is held, where a part encoded whole is held entire (half a gigabyte
/// for 50,000 detectors) until it is stored. Each chunk goes to `emit` as it is cut; `finish`
/// sends the last.
pub struct Chunker<F: FnMut(Vec<u8>) -> std::io::Result<()>> {
    chunk: Vec<u8>,
    hash: u64,
    emit: F,
}

impl<F: FnMut(Vec<u8>) -> std::io::Result<()>> Chunker<F> {
    pub fn new(emit: F) -> Self {
        Chunker {
            chunk: Vec::new(),
            hash: 0,
            emit,
        }
    }

    /// Sends the last chunk (none for no bytes at all).
    pub fn finish(mut self) -> std::io::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        (self.emit)(std::mem::take(&mut self.chunk))
    }
}

impl<F: FnMut(Vec<u8>) -> std::io::Result<()>> std::io::Write for Chunker<F> {
    fn write(&mut self, mut data: &[u8]) -> std::io::Result<usize> {
        let written = data.len();
        while !data.is_empty() {
            match scan(&mut self.hash, self.chunk.len(), data) {
                Some(cut) => {
                    self.chunk.extend_from_slice(&data[..cut]);
                    data = &data[cut..];
                    self.hash = 0;
                    let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(MAX));
                    (self.emit)(chunk)?;
                }
                None => {
                    if self.chunk.capacity() == 0 {
                        self.chunk.reserve(MAX.min(data.len().max(MIN)));
                    }
                    self.chunk.extend_from_slice(data);
                    data = &[];
                }
            }
        }
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A chunk's name: 32 hex digits of its XXH3-128.
pub fn chunk_name(chunk: &[u8]) -> String {
    format!("{:032x}", twox_hash::XxHash3_128::oneshot(chunk))
}

/// The chunks of `data`, each with its name.
pub fn chunks(data: &[u8]) -> Vec<(String, &[u8])> {
    let mut start = 0;
    cut_points(data)
        .into_iter()
        .map(|end| {
            let chunk = &data[start..end];
            start = end;
            (chunk_name(chunk), chunk)
        })
        .collect()
}

/// Bytes with no repeats to speak of, for tests of chunking and of the store.
#[doc(hidden)]
pub fn noise(length: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..length)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_data_within_their_bounds() {
        let data = noise(20 << 20, 1);
        let ends = cut_points(&data);
        assert_eq!(*ends.last().unwrap(), data.len());
        let mut start = 0;
        for end in &ends[..ends.len() - 1] {
            assert!(end - start >= MIN && end - start <= MAX, "{}", end - start);
            start = *end;
        }
        assert!(cut_points(&[]).is_empty());
        assert_eq!(cut_points(&[7; 10]), vec![10]);
    }

    #[test]
    fn bytes_inserted_early_change_only_the_chunks_around_them() {
        let data = noise(24 << 20, 2);
        let mut edited = data[..100_000].to_vec();
        edited.extend_from_slice(b"a new group in the middle of the state");
        edited.extend_from_slice(&data[100_000..]);
        let before: std::collections::HashSet<String> =
            chunks(&data).into_iter().map(|(name, _)| name).collect();
        let after = chunks(&edited);
        let new = after
            .iter()
            .filter(|(name, _)| !before.contains(name))
            .count();
        assert!(after.len() > 10, "{} chunks", after.len());
        assert!(new <= 2, "{new} of {} chunks changed", after.len());
    }

    #[test]
    fn a_part_cut_as_it_is_written_is_cut_where_it_is_cut_whole() {
        use std::io::Write;
        let data = noise(13 << 20, 5);
        let whole: Vec<&[u8]> = chunks(&data).into_iter().map(|(_, chunk)| chunk).collect();
        // Written in pieces of every size an encoder makes: bytes, words, long runs.
        for piece in [1, 8, 4093, 1 << 20, 6 << 20] {
            let mut streamed = Vec::new();
            let mut chunker = Chunker::new(|chunk| {
                streamed.push(chunk);
                Ok(())
            });
            for part in data.chunks(piece) {
                chunker.write_all(part).unwrap();
            }
            chunker.finish().unwrap();
            assert_eq!(streamed.len(), whole.len(), "pieces of {piece}");
            assert!(
                streamed.iter().zip(&whole).all(|(a, b)| a == b),
                "pieces of {piece}"
            );
        }
        let mut none = Vec::new();
        Chunker::new(|chunk| {
            none.push(chunk);
            Ok(())
        })
        .finish()
        .unwrap();
        assert!(none.is_empty());
    }
}
