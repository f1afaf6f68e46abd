//! How a replayed file is shared out between workers: by stripes of bytes, dealt round-robin.
//!
//! Each worker reads only its own stripes, seeking past the others': nothing is read twice, and
//! decoding — the expensive part — is spread without coordination. A line belongs to the stripe
//! its first byte is in, so a worker reads on past its stripe's end to finish its last line, and
//! starts a stripe at the first line that begins in it. Stripes are dealt round-robin rather than
//! as one range per worker because a replay is driven by event time: with contiguous ranges the
//! last worker would read hours ahead of the first, holding every window of those hours open
//! until the first caught up. With stripes a few MiB long, all workers move through the file's
//! time together.
//!
//! A worker reads its lines in file order, so one byte offset — where its next line starts —
//! says which of its lines it has read. Resumed with another worker count, the new workers own
//! other stripes; they keep the old workers' offsets (and stripe size) as a *generation*: a line
//! was read if the old worker owning its stripe had passed it. A generation is dropped once the
//! worker's own offset is past every offset in it.

use serde::{Deserialize, Serialize};

/// Stripes are never smaller than this (the reader's buffer is as large)...
pub const SMALLEST: u64 = 64 << 10;
/// ...nor larger than this: workers stay within a few stripes of each other in the file.
pub const LARGEST: u64 = 4 << 20;
/// A file gets at least this many stripes per worker when it is large enough, so that small
/// files are shared out too.
const PER_WORKER: u64 = 16;

/// The stripe size for a file of `length` bytes read by `peers` workers.
pub fn stripe_size(length: u64, peers: usize) -> u64 {
    (length / (peers as u64 * PER_WORKER).max(1)).clamp(SMALLEST, LARGEST)
}

/// The offsets the workers of an earlier run (another worker count) had read up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub stripe: u64,
    /// Per old worker: where its next line started.
    pub offsets: Vec<u64>,
}

/// One worker's share of a file.
#[derive(Debug, Clone)]
pub struct Stripes {
    pub size: u64,
    pub worker: usize,
    pub peers: usize,
    pub earlier: Vec<Generation>,
}

/// Where a worker goes next from a line start.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// The line starting here is this worker's to read.
    Read,
    /// The lines from here up to this offset (a line start) were read in an earlier run.
    SkipTo(u64),
    /// The rest of this stripe is another worker's, or was read in an earlier run: go on at
    /// the first line that starts at or after this offset.
    SeekLine(u64),
}

impl Stripes {
    /// What to do with the line starting at `start`; the caller moves and asks again.
    pub fn next(&self, start: u64) -> Next {
        let stripe = start / self.size;
        if stripe % self.peers as u64 != self.worker as u64 {
            return Next::SeekLine(self.next_own_stripe(stripe) * self.size);
        }
        for generation in &self.earlier {
            let old_stripe = start / generation.stripe;
            let old_worker = (old_stripe % generation.offsets.len() as u64) as usize;
            let offset = generation.offsets[old_worker];
            if start < offset {
                // The old worker had read its stripe's lines up to `offset`, or all of them
                // if it had moved on to a later stripe.
                let old_end = (old_stripe + 1) * generation.stripe;
                return if offset <= old_end {
                    Next::SkipTo(offset)
                } else {
                    Next::SeekLine(old_end)
                };
            }
        }
        Next::Read
    }

    /// The first of this worker's stripes after `stripe`.
    fn next_own_stripe(&self, stripe: u64) -> u64 {
        let peers = self.peers as u64;
        let after = stripe + 1;
        after + (self.worker as u64 + peers - after % peers) % peers
    }

    /// Drops the generations that no longer decide anything once this worker's next line
    /// starts at `offset`.
    pub fn passed(&mut self, offset: u64) {
        self.earlier
            .retain(|generation| generation.offsets.iter().any(|&old| old > offset));
    }

    /// Bytes of this worker's stripes before `offset` (for a resumed replay's progress).
    pub fn own_bytes_before(&self, offset: u64) -> u64 {
        let peers = self.peers as u64;
        let worker = self.worker as u64;
        let whole = offset / self.size;
        let own_whole = whole / peers + u64::from(whole % peers > worker);
        let partial = if whole % peers == worker {
            offset % self.size
        } else {
            0
        };
        own_whole * self.size + partial
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A file of lines of random lengths, some longer than a stripe.
    fn file(lines: usize, seed: u64) -> Vec<u8> {
        let mut random = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut data = Vec::new();
        for _ in 0..lines {
            let length = if random.random_bool(0.01) {
                random.random_range(100..400)
            } else {
                random.random_range(0..40)
            };
            data.extend(std::iter::repeat_n(b'x', length));
            data.push(b'\n');
        }
        data
    }

    /// Where the first line starting at or after `at` starts (the file's end if none does).
    fn line_at_or_after(data: &[u8], at: u64) -> u64 {
        if at == 0 {
            return 0;
        }
        if at > data.len() as u64 {
            return data.len() as u64;
        }
        match data[(at - 1) as usize..].iter().position(|&b| b == b'\n') {
            Some(newline) => at + newline as u64,
            None => data.len() as u64,
        }
    }

    /// One worker reading from `offset` as the file reader does, at most `lines` lines; returns
    /// the starts of the lines it read.
    fn read(data: &[u8], stripes: &mut Stripes, offset: &mut u64, lines: usize) -> Vec<u64> {
        let mut read = Vec::new();
        while *offset < data.len() as u64 && read.len() < lines {
            match stripes.next(*offset) {
                Next::Read => {
                    read.push(*offset);
                    *offset = line_at_or_after(data, *offset + 1);
                    stripes.passed(*offset);
                }
                Next::SkipTo(to) => *offset = to,
                Next::SeekLine(at) => *offset = line_at_or_after(data, at),
            }
            stripes.passed(*offset);
        }
        read
    }

    /// Workers of one run: their stripes and offsets, from a fresh start or from the workers of
    /// an earlier run.
    fn workers(
        data: &[u8],
        peers: usize,
        earlier: Option<&(Vec<Stripes>, Vec<u64>)>,
    ) -> (Vec<Stripes>, Vec<u64>) {
        let size = stripe_size(data.len() as u64, peers).min(97 * (peers as u64 + 1));
        let mut generations: Vec<Generation> = Vec::new();
        if let Some((old, offsets)) = earlier {
            for worker in old {
                for generation in &worker.earlier {
                    if !generations.contains(generation) {
                        generations.push(generation.clone());
                    }
                }
            }
            generations.push(Generation {
                stripe: old[0].size,
                offsets: offsets.clone(),
            });
        }
        let stripes = (0..peers)
            .map(|worker| Stripes {
                size,
                worker,
                peers,
                earlier: generations.clone(),
            })
            .collect();
        (stripes, vec![0; peers])
    }

    #[test]
    fn every_line_is_read_once_across_runs_of_changing_worker_counts() {
        for seed in 0..20 {
            let data = file(3000, seed);
            let starts: Vec<u64> = (0..data.len() as u64)
                .filter(|&at| at == 0 || data[at as usize - 1] == b'\n')
                .filter(|&at| at < data.len() as u64)
                .collect();
            let mut random = rand_chacha::ChaCha8Rng::seed_from_u64(seed + 100);
            let mut all = Vec::new();
            let mut run: Option<(Vec<Stripes>, Vec<u64>)> = None;
            for peers in [3, 2, 5, 1] {
                let (mut stripes, mut offsets) = workers(&data, peers, run.as_ref());
                for worker in 0..peers {
                    let lines = if peers == 1 {
                        usize::MAX
                    } else {
                        random.random_range(0..600)
                    };
                    all.extend(read(
                        &data,
                        &mut stripes[worker],
                        &mut offsets[worker],
                        lines,
                    ));
                }
                run = Some((stripes, offsets));
            }
            all.sort_unstable();
            assert_eq!(all, starts, "seed {seed}");
            // At the end of the file nothing of the earlier runs is left.
            assert!(run.unwrap().0[0].earlier.is_empty());
        }
    }

    #[test]
    fn each_worker_reads_only_its_stripes_and_whole_lines() {
        let data = file(5000, 7);
        let peers = 3;
        let (mut stripes, mut offsets) = workers(&data, peers, None);
        for worker in 0..peers {
            let size = stripes[worker].size;
            for start in read(
                &data,
                &mut stripes[worker],
                &mut offsets[worker],
                usize::MAX,
            ) {
                assert_eq!((start / size) % peers as u64, worker as u64);
            }
        }
    }

    #[test]
    fn stripes_are_sized_to_the_file_and_the_workers() {
        assert_eq!(stripe_size(10, 2), SMALLEST);
        assert_eq!(stripe_size(64 << 20, 2), 2 << 20);
        assert_eq!(stripe_size(10 << 30, 2), LARGEST);
        let stripes = Stripes {
            size: 10,
            worker: 1,
            peers: 3,
            earlier: Vec::new(),
        };
        // Stripes 1 and 4 are worker 1's: 10 bytes of stripe 1, then 5 of stripe 4.
        assert_eq!(stripes.own_bytes_before(45), 15);
        assert_eq!(stripes.own_bytes_before(35), 10);
        assert_eq!(stripes.own_bytes_before(15), 5);
    }
}
