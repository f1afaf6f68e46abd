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

/// Where `data` is cut: the end offset of each chunk.
pub fn cut_points(data: &[u8]) -> Vec<usize> {
    let gear = gear();
    let mask: u64 = ((1u64 << AVERAGE_BITS) - 1) << (64 - AVERAGE_BITS);
    let mut ends = Vec::with_capacity(data.len() / (1 << AVERAGE_BITS) + 1);
    let mut start = 0;
    while start < data.len() {
        let rest = &data[start..];
        if rest.len() <= MIN {
            ends.push(data.len());
            break;
        }
        let limit = rest.len().min(MAX);
        let mut hash: u64 = 0;
        let mut cut = limit;
        // The first MIN bytes only feed the hash: no cut there.
        for (offset, byte) in rest[..limit].iter().enumerate() {
            hash = (hash << 1).wrapping_add(gear[*byte as usize]);
            if offset >= MIN && hash & mask == 0 {
                cut = offset + 1;
                break;
            }
        }
        start += cut;
        ends.push(start);
    }
    ends
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
#[cfg(test)]
pub(super) fn noise(length: usize, seed: u64) -> Vec<u8> {
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
}
