//! How a partial group crosses between the processes of a cluster: as one byte string in the
//! compact form of `vibelux_interfaces::wire`, not field by field through serde.
//!
//! Partial groups are nearly all a cluster sends (see `partial_aggregate`), one per key of every
//! batch, and timely walks each message twice (to size it, then to write it). Serde's derived
//! form made each partial dozens of calls into bincode and each text two allocations on arrival;
//! this form is one call each way, and the owner decodes straight from the received buffer.
//! Partials are never checkpointed, so this layout can change with the build: every process of a
//! cluster runs the same one.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use vibelux_interfaces::wire::{
    WireError, WireReader, WireWriter, deserialize_encoded, serialize_encoded,
};
use vibelux_models::onnx::FeatureReference;

use crate::accumulator::Accumulator;
use crate::partial_aggregate::Partial;

mod tag {
    pub const COUNT: u8 = 0;
    pub const SUM_INT: u8 = 1;
    pub const SUM_FLOAT: u8 = 2;
    pub const MOMENTS: u8 = 3;
    pub const NO_EXTREME: u8 = 4;
    pub const EXTREME: u8 = 5;
    pub const MULTISET: u8 = 6;
    pub const NO_ORDERED: u8 = 7;
    pub const ORDERED: u8 = 8;
    pub const ORDERED_MULTISET: u8 = 9;
    pub const HISTOGRAM: u8 = 10;
}

impl Serialize for Partial {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_encoded(serializer, |out| encode(self, out))
    }
}

impl<'de> Deserialize<'de> for Partial {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_encoded(deserializer, "a partial group", decode)
    }
}

fn encode(partial: &Partial, out: &mut WireWriter) {
    out.datums(&partial.key);
    out.i64(partial.rows);
    out.length(partial.accumulators.len());
    for accumulator in &partial.accumulators {
        encode_accumulator(accumulator, out);
    }
}

fn decode(input: &mut WireReader) -> Result<Partial, WireError> {
    let key = input.datums()?;
    let rows = input.i64("a partial's row count")?;
    // Every accumulator takes at least its tag.
    let count = input.count(1)?;
    let mut accumulators = Vec::with_capacity(count);
    for _ in 0..count {
        accumulators.push(decode_accumulator(input)?);
    }
    Ok(Partial {
        key,
        rows,
        accumulators,
    })
}

fn encode_accumulator(accumulator: &Accumulator, out: &mut WireWriter) {
    match accumulator {
        Accumulator::Count(count) => {
            out.u8(tag::COUNT);
            out.i64(*count);
        }
        Accumulator::SumInt { sum, values } => {
            out.u8(tag::SUM_INT);
            out.i128(*sum);
            out.i64(*values);
        }
        Accumulator::SumFloat { sum, values } => {
            out.u8(tag::SUM_FLOAT);
            out.f64(*sum);
            out.i64(*values);
        }
        Accumulator::Moments {
            values,
            sum,
            sum_of_squares,
        } => {
            out.u8(tag::MOMENTS);
            out.i64(*values);
            out.f64(*sum);
            out.f64(*sum_of_squares);
        }
        Accumulator::Extreme(None) => out.u8(tag::NO_EXTREME),
        Accumulator::Extreme(Some(value)) => {
            out.u8(tag::EXTREME);
            out.datum(value);
        }
        Accumulator::Multiset(counts) => {
            out.u8(tag::MULTISET);
            out.length(counts.len());
            for (value, count) in counts {
                out.datum(value);
                out.i64(*count);
            }
        }
        Accumulator::Ordered(None) => out.u8(tag::NO_ORDERED),
        Accumulator::Ordered(Some((value, order))) => {
            out.u8(tag::ORDERED);
            out.datum(value);
            out.datum(order);
        }
        Accumulator::OrderedMultiset(counts) => {
            out.u8(tag::ORDERED_MULTISET);
            out.length(counts.len());
            for ((value, order), count) in counts {
                out.datum(value);
                out.datum(order);
                out.i64(*count);
            }
        }
        Accumulator::Histogram { reference, counts } => {
            out.u8(tag::HISTOGRAM);
            // Named field by field, so that a field added to the reference fails to compile
            // here rather than vanish in transit.
            let FeatureReference {
                name,
                edges,
                expected,
            } = &**reference;
            out.text(name);
            for floats in [edges, expected] {
                out.length(floats.len());
                floats.iter().for_each(|value| out.f64(*value));
            }
            out.length(counts.len());
            counts.iter().for_each(|count| out.i64(*count));
        }
    }
}

fn decode_accumulator(input: &mut WireReader) -> Result<Accumulator, WireError> {
    Ok(match input.u8("an accumulator")? {
        tag::COUNT => Accumulator::Count(input.i64("a count")?),
        tag::SUM_INT => Accumulator::SumInt {
            sum: input.i128("a sum")?,
            values: input.i64("a sum's count")?,
        },
        tag::SUM_FLOAT => Accumulator::SumFloat {
            sum: input.f64("a sum")?,
            values: input.i64("a sum's count")?,
        },
        tag::MOMENTS => Accumulator::Moments {
            values: input.i64("a count of values")?,
            sum: input.f64("a sum")?,
            sum_of_squares: input.f64("a sum of squares")?,
        },
        tag::NO_EXTREME => Accumulator::Extreme(None),
        tag::EXTREME => Accumulator::Extreme(Some(input.datum()?)),
        tag::MULTISET => {
            let mut counts = BTreeMap::new();
            // A datum's tag and an eight-byte count.
            for _ in 0..input.count(9)? {
                let value = input.datum()?;
                counts.insert(value, input.i64("a value's count")?);
            }
            Accumulator::Multiset(counts)
        }
        tag::NO_ORDERED => Accumulator::Ordered(None),
        tag::ORDERED => Accumulator::Ordered(Some((input.datum()?, input.datum()?))),
        tag::ORDERED_MULTISET => {
            let mut counts = BTreeMap::new();
            for _ in 0..input.count(10)? {
                let pair = (input.datum()?, input.datum()?);
                counts.insert(pair, input.i64("a value's count")?);
            }
            Accumulator::OrderedMultiset(counts)
        }
        tag::HISTOGRAM => {
            let name = input.text()?.to_owned();
            let mut floats = || -> Result<Vec<f64>, WireError> {
                (0..input.count(8)?).map(|_| input.f64("a bin")).collect()
            };
            let edges = floats()?;
            let expected = floats()?;
            let counts = (0..input.count(8)?)
                .map(|_| input.i64("a bin's count"))
                .collect::<Result<_, _>>()?;
            Accumulator::Histogram {
                reference: Box::new(FeatureReference {
                    name,
                    edges,
                    expected,
                }),
                counts,
            }
        }
        tag => {
            return Err(WireError::UnknownTag {
                kind: "accumulator",
                tag,
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::Datum;

    fn every_accumulator() -> Vec<Accumulator> {
        let text = |s: &str| Datum::Utf8(s.into());
        vec![
            Accumulator::Count(-3),
            Accumulator::SumInt {
                sum: i128::from(i64::MAX) * 4,
                values: 4,
            },
            Accumulator::SumFloat {
                sum: 2.5,
                values: 2,
            },
            Accumulator::Moments {
                values: 3,
                sum: 6.0,
                sum_of_squares: 14.0,
            },
            Accumulator::Extreme(None),
            Accumulator::Extreme(Some(Datum::Float64(-1.5))),
            Accumulator::Multiset(BTreeMap::from([(text("a"), 2), (Datum::Null, -1)])),
            Accumulator::Ordered(None),
            Accumulator::Ordered(Some((text("b"), Datum::Timestamp(7)))),
            Accumulator::OrderedMultiset(BTreeMap::from([((Datum::Int64(1), Datum::Null), 1)])),
            Accumulator::Histogram {
                reference: Box::new(FeatureReference {
                    name: "temp_c".into(),
                    edges: vec![18.0, 24.0],
                    expected: vec![0.2, 0.5, 0.3],
                }),
                counts: vec![1, 0, 5],
            },
        ]
    }

    fn partial() -> Partial {
        Partial {
            key: vec![
                Datum::Utf8("s0001".into()),
                Datum::Timestamp(1_780_272_000_000_000_000),
            ],
            rows: 4,
            accumulators: every_accumulator(),
        }
    }

    /// Accumulators have no equality of their own; their derived serde form (which checkpoints
    /// use) holds every field.
    fn shown(partial: &Partial) -> (Vec<Datum>, i64, Vec<u8>) {
        let accumulators = bincode::serialize(&partial.accumulators).expect("serialises");
        (partial.key.clone(), partial.rows, accumulators)
    }

    #[test]
    fn every_accumulator_crosses_bincode_as_it_was() {
        let sent = partial();
        let bytes = bincode::serialize(&vec![sent.clone(), sent.clone()]).expect("serialises");
        let received: Vec<Partial> = bincode::deserialize(&bytes).expect("deserialises");
        assert_eq!(received.len(), 2);
        for partial in &received {
            assert_eq!(shown(partial), shown(&sent));
        }
    }

    #[test]
    fn a_partial_travels_in_fewer_bytes_than_serdes_derived_form() {
        let partial = Partial {
            key: vec![
                Datum::Utf8("s0001".into()),
                Datum::Timestamp(1_780_272_000_000_000_000),
                Datum::Timestamp(1_780_272_060_000_000_000),
            ],
            rows: 4,
            accumulators: vec![
                Accumulator::Moments {
                    values: 4,
                    sum: 90.0,
                    sum_of_squares: 2030.0,
                },
                Accumulator::Extreme(Some(Datum::Float64(73.4))),
                Accumulator::Extreme(Some(Datum::Float64(61.0))),
                Accumulator::Count(4),
            ],
        };
        let compact = bincode::serialized_size(&partial).expect("sizes");
        let derived =
            bincode::serialized_size(&(&partial.key, partial.rows, &partial.accumulators))
                .expect("sizes");
        // Bytes' length; the key; the row count; the accumulators' count, a one-byte tag each.
        assert_eq!(
            compact,
            8 + 26 + 8 + 1 + (1 + 24) + 2 * (1 + 1 + 8) + (1 + 8)
        );
        assert_eq!(
            derived,
            49 + 8 + 8 + (4 + 24) + 2 * (4 + 1 + 4 + 8) + (4 + 8)
        );
    }

    #[test]
    fn a_corrupt_partial_is_an_error_that_says_what_was_read() {
        let mut bytes = Vec::new();
        encode(&partial(), &mut WireWriter::new(&mut bytes));
        for end in 0..bytes.len() {
            let cut = bincode::serialize(&bytes[..end]).expect("bytes");
            assert!(
                bincode::deserialize::<Partial>(&cut).is_err(),
                "cut at {end}"
            );
        }
        let key_and_rows = 1 + (1 + 1 + 5) + (1 + 8) + 8;
        bytes[key_and_rows + 1] = 99;
        let error = bincode::deserialize::<Partial>(&bincode::serialize(&bytes).expect("bytes"))
            .expect_err("an unknown accumulator");
        assert_eq!(
            error.to_string(),
            "a partial group: unknown accumulator tag 99"
        );
    }
}
