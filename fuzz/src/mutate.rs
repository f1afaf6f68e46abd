//! Inputs made from the corpus: each one a seed changed a few times over.
//!
//! The changes are those that find parser bugs without knowing the grammar: flipped bits,
//! bytes replaced, inserted and removed, runs repeated (deep nesting, long numbers), pieces of
//! other seeds spliced in, tokens of the target's language dropped in, and the input cut
//! short. Boundary values (0, 0x7f, 0x80, 0xff, "-1", "1e309", lone surrogates) come often,
//! since that is where decoders slip.

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Bytes at the edges of encodings: ASCII's end, UTF-8 lead and continuation bytes, varint
/// continuation bits.
const EDGE_BYTES: &[u8] = &[
    0, 1, 0x7f, 0x80, 0x81, 0xbf, 0xc0, 0xc2, 0xe0, 0xed, 0xf0, 0xf4, 0xff,
];

/// Text that often breaks parsers of numbers, strings and times.
const EDGE_TOKENS: &[&str] = &[
    "-1",
    "0",
    "-0",
    "1e309",
    "-9223372036854775808",
    "18446744073709551616",
    "NaN",
    "\"\\ud800\"",
    "\\u0000",
    "9999-12-31T23:59:59Z",
    "0000-00-00",
    "\u{feff}",
    "''",
    "\"",
    "[[[[[[[[",
    "{{{{{{{{",
    "((((((((",
];

pub struct Mutator {
    rng: ChaCha8Rng,
    dictionary: &'static [&'static [u8]],
    max_len: usize,
}

impl Mutator {
    pub fn new(seed: u64, dictionary: &'static [&'static [u8]], max_len: usize) -> Self {
        Mutator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            dictionary,
            max_len,
        }
    }

    /// A new input from `seeds` (which must not be empty).
    pub fn next(&mut self, seeds: &[Vec<u8>]) -> Vec<u8> {
        let mut input = seeds[self.rng.random_range(0..seeds.len())].clone();
        let rounds = 1 + self.rng.random_range(0..4) * self.rng.random_range(1..4);
        for _ in 0..rounds {
            self.change(&mut input, seeds);
        }
        input.truncate(self.max_len);
        input
    }

    fn position(&mut self, input: &[u8]) -> usize {
        self.rng.random_range(0..=input.len())
    }

    fn change(&mut self, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
        match self.rng.random_range(0..10) {
            0 if !input.is_empty() => {
                let at = self.rng.random_range(0..input.len());
                input[at] ^= 1 << self.rng.random_range(0..8);
            }
            1 if !input.is_empty() => {
                let at = self.rng.random_range(0..input.len());
                input[at] = if self.rng.random_bool(0.5) {
                    EDGE_BYTES[self.rng.random_range(0..EDGE_BYTES.len())]
                } else {
                    self.rng.next_u32() as u8
                };
            }
            2 => {
                let at = self.position(input);
                let count = self.rng.random_range(1..8);
                let bytes: Vec<u8> = (0..count).map(|_| self.rng.next_u32() as u8).collect();
                input.splice(at..at, bytes);
            }
            3 if !input.is_empty() => {
                let start = self.rng.random_range(0..input.len());
                let end = (start + self.rng.random_range(1..16)).min(input.len());
                input.drain(start..end);
            }
            4 if !input.is_empty() => {
                // A run repeated: nesting, long tokens, many fields.
                let start = self.rng.random_range(0..input.len());
                let end = (start + self.rng.random_range(1..12)).min(input.len());
                let run = input[start..end].to_vec();
                let times = self.rng.random_range(2..64);
                let at = self.position(input);
                input.splice(at..at, run.iter().copied().cycle().take(run.len() * times));
            }
            5 => {
                // A piece of another seed.
                let other = &seeds[self.rng.random_range(0..seeds.len())];
                if !other.is_empty() {
                    let start = self.rng.random_range(0..other.len());
                    let end = (start + self.rng.random_range(1..64)).min(other.len());
                    let at = self.position(input);
                    input.splice(at..at, other[start..end].iter().copied());
                }
            }
            6 | 7 => {
                let token = if self.dictionary.is_empty() || self.rng.random_bool(0.3) {
                    EDGE_TOKENS[self.rng.random_range(0..EDGE_TOKENS.len())].as_bytes()
                } else {
                    self.dictionary[self.rng.random_range(0..self.dictionary.len())]
                };
                let at = self.position(input);
                if self.rng.random_bool(0.5) || input.is_empty() {
                    input.splice(at..at, token.iter().copied());
                } else {
                    // Replaces a run of the same length, keeping the rest in place.
                    let end = (at + token.len()).min(input.len());
                    input.splice(at..end, token.iter().copied());
                }
            }
            8 if !input.is_empty() => {
                let at = self.rng.random_range(0..input.len());
                input.truncate(at);
            }
            _ => {
                // A 16-, 32- or 64-bit boundary value, little or big endian.
                let value: u64 = match self.rng.random_range(0..6) {
                    0 => 0,
                    1 => u64::MAX,
                    2 => 0x7fff_ffff,
                    3 => 0x8000_0000,
                    4 => 0xffff,
                    _ => self.rng.next_u64(),
                };
                let width = [2usize, 4, 8][self.rng.random_range(0..3)];
                let bytes = if self.rng.random_bool(0.5) {
                    value.to_le_bytes()
                } else {
                    value.to_be_bytes()
                };
                let at = self.position(input);
                input.splice(at..at, bytes[..width].iter().copied());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_makes_the_same_inputs_and_they_stay_short() {
        let seeds = vec![b"SELECT 1".to_vec(), b"{\"a\": 1}".to_vec()];
        let mut a = Mutator::new(7, &[b"FROM"], 64);
        let mut b = Mutator::new(7, &[b"FROM"], 64);
        let made: Vec<Vec<u8>> = (0..1000).map(|_| a.next(&seeds)).collect();
        assert!(made.iter().all(|input| input.len() <= 64));
        assert_eq!(made, (0..1000).map(|_| b.next(&seeds)).collect::<Vec<_>>());
        // They differ from the seeds most of the time.
        assert!(made.iter().filter(|input| !seeds.contains(input)).count() > 900);
    }
}
