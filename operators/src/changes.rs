//! Appends as updates, and updates consolidated into contents.
//!
//! Append-only relations (sources, filters of them, window assignment) flow as plain rows; where an
//! operator needs differential updates, [`IntoUpdatesExt::into_updates`] stamps each row with its time
//! and a +1. [`consolidate`] sums the diffs of identical rows, which is how the contents of a view
//! are read off its changes.

use std::collections::BTreeMap;

use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::row::{Row, Update};

/// Turns a stream of appended rows into a stream of insertions.
///
/// ```
/// use timely::dataflow::operators::{Capture, ToStream, capture::Extract};
/// use vibelux_operators::changes::IntoUpdatesExt;
/// use vibelux_operators::row::Datum;
///
/// let captured = timely::example(|scope| {
///     vec![vec![Datum::Int64(7)]].to_stream(scope).container::<Vec<_>>().into_updates().capture()
/// });
/// let updates: Vec<_> = captured.extract().into_iter().flat_map(|(_, u)| u).collect();
/// assert_eq!(updates, vec![(vec![Datum::Int64(7)], 0, 1)]);
/// ```
pub trait IntoUpdatesExt<'scope> {
    fn into_updates(self) -> Stream<'scope, u64, Vec<Update>>;
}

impl<'scope> IntoUpdatesExt<'scope> for Stream<'scope, u64, Vec<Row>> {
    fn into_updates(self) -> Stream<'scope, u64, Vec<Update>> {
        self.unary(Pipeline, "AsUpdates", |_, _| {
            |input, output| {
                input.for_each(|time, data| {
                    let Some(&now) = time.least() else { return };
                    let mut updates: Vec<Update> =
                        data.drain(..).map(|row| (row, now, 1)).collect();
                    output.session(&time).give_container(&mut updates);
                });
            }
        })
    }
}

/// The contents a list of updates adds up to: rows with a positive net count, repeated that many
/// times, in sorted order. Rows with a negative net count (a retraction of something never
/// inserted) are reported as errors by the caller; they are returned separately.
pub fn consolidate(updates: impl IntoIterator<Item = (Row, i64)>) -> (Vec<Row>, Vec<(Row, i64)>) {
    let mut counts: BTreeMap<Row, i64> = BTreeMap::new();
    for (row, diff) in updates {
        *counts.entry(row).or_insert(0) += diff;
    }
    let mut contents = Vec::new();
    let mut negative = Vec::new();
    for (row, count) in counts {
        if count < 0 {
            negative.push((row, count));
        } else {
            contents.extend(std::iter::repeat_n(row, count as usize));
        }
    }
    (contents, negative)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::Datum;

    #[test]
    fn an_update_and_its_retraction_cancel() {
        let a = vec![Datum::Int64(1)];
        let b = vec![Datum::Int64(2)];
        let (contents, negative) = consolidate([
            (a.clone(), 1),
            (a.clone(), -1),
            (b.clone(), 1),
            (b.clone(), 1),
        ]);
        assert_eq!(contents, vec![b.clone(), b]);
        assert!(negative.is_empty());
    }
}
