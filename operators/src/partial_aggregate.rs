//! Combining before the exchange: with more than one worker, each worker folds the rows of a
//! batch into one partial group per key, and only those partial groups travel to the worker that
//! owns the key, where they merge into its groups.
//!
//! A `GROUP BY zone` over a thousand sensors sends a worker's few hundred partial zones per batch
//! instead of its thousands of rows: less to serialize between processes of a cluster, less to
//! hand between threads, fewer lookups in the owner's groups. It is exact because every
//! accumulator merges (the property session windows already rely on); the one difference is the
//! order in which a floating-point sum adds its terms, which already differs between worker
//! counts. Nothing is held across batches, so checkpoints are as without it. Session windows
//! merge by their bounds on the owner and are not combined.

use std::collections::HashMap;
use std::sync::Arc;

use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::accumulator::{Accumulator, AggregateSpec};
use crate::aggregate::{AggregatePlan, StateMap};
use crate::row::{Datum, Row, Update};

/// A group's state over some rows of one batch of one worker: what the owner merges. It crosses
/// between processes in the compact form of `partial_wire`.
#[derive(Clone, Debug)]
pub struct Partial {
    pub key: Row,
    /// Rows counted in (negative when the batch retracted more than it added).
    pub rows: i64,
    pub accumulators: Vec<Accumulator>,
}

/// What an aggregate's input can be: rows with their diffs, or partial groups.
pub trait Contribution: timely::ExchangeData + Clone {
    fn key(&self, key_columns: usize) -> &[Datum];
    /// Gives the contribution another key (a session it merged into).
    fn rekey(&mut self, key_columns: usize, key: Row);
    /// Adds this contribution to a group's row count and accumulators.
    fn fold_into(
        self,
        aggregates: &[AggregateSpec],
        rows: &mut i64,
        accumulators: &mut [Accumulator],
    );
}

impl Contribution for Update {
    fn key(&self, key_columns: usize) -> &[Datum] {
        &self.0[..key_columns]
    }

    fn rekey(&mut self, key_columns: usize, key: Row) {
        self.0.splice(..key_columns, key);
    }

    fn fold_into(
        self,
        aggregates: &[AggregateSpec],
        rows: &mut i64,
        accumulators: &mut [Accumulator],
    ) {
        let (row, _, diff) = self;
        fold_row(aggregates, &row, diff, rows, accumulators);
    }
}

impl Contribution for Partial {
    fn key(&self, _key_columns: usize) -> &[Datum] {
        &self.key
    }

    fn rekey(&mut self, _key_columns: usize, key: Row) {
        self.key = key;
    }

    fn fold_into(
        self,
        aggregates: &[AggregateSpec],
        rows: &mut i64,
        accumulators: &mut [Accumulator],
    ) {
        *rows += self.rows;
        for ((spec, mine), theirs) in aggregates.iter().zip(accumulators).zip(self.accumulators) {
            mine.merge(theirs, spec.function);
        }
    }
}

/// Adds one row `diff` times to a group.
fn fold_row(
    aggregates: &[AggregateSpec],
    row: &[Datum],
    diff: i64,
    rows: &mut i64,
    accumulators: &mut [Accumulator],
) {
    *rows += diff;
    for (spec, accumulator) in aggregates.iter().zip(accumulators) {
        if !spec.admits(row) {
            continue;
        }
        let value = spec.argument.map_or(&Datum::Null, |column| &row[column]);
        let order = spec.order_by.map_or(&Datum::Null, |column| &row[column]);
        accumulator.update(spec.function, value, order, diff);
    }
}

pub trait CombineExt<'scope> {
    /// The partial groups of each batch, one per key and time, for the owners to merge.
    fn combine(self, plan: Arc<AggregatePlan>) -> Stream<'scope, u64, Vec<Partial>>;
}

/// The partial groups of one time, filled over the batches of one activation.
type Pending = (Capability<u64>, StateMap<Row, (i64, Vec<Accumulator>)>);

impl<'scope> CombineExt<'scope> for Stream<'scope, u64, Vec<Update>> {
    fn combine(self, plan: Arc<AggregatePlan>) -> Stream<'scope, u64, Vec<Partial>> {
        self.unary(Pipeline, "CombineBeforeExchange", move |_, _| {
            let mut pending: Vec<Pending> = Vec::new();
            // Maps emptied by the last activation, kept for their allocation.
            let mut spare: Vec<StateMap<Row, (i64, Vec<Accumulator>)>> = Vec::new();
            move |input, output| {
                let key_columns = plan.key_columns;
                input.for_each(|time, data| {
                    let Some(least) = time.least() else {
                        return;
                    };
                    let at = match pending.iter().position(|(c, _)| c.time() == least) {
                        Some(at) => at,
                        None => {
                            let Some(capability) = time.retain_least(0) else {
                                return;
                            };
                            let groups = spare.pop().unwrap_or_else(|| {
                                HashMap::with_capacity_and_hasher(data.len(), Default::default())
                            });
                            pending.push((capability, groups));
                            pending.len() - 1
                        }
                    };
                    let groups = &mut pending[at].1;
                    for (mut row, _, diff) in data.drain(..) {
                        if let Some((rows, accumulators)) = groups.get_mut(&row[..key_columns]) {
                            fold_row(&plan.aggregates, &row, diff, rows, accumulators);
                            continue;
                        }
                        let mut rows = 0;
                        let mut accumulators: Vec<Accumulator> = plan
                            .aggregates
                            .iter()
                            .map(|spec| Accumulator::of(spec, plan.input_retracts))
                            .collect();
                        fold_row(&plan.aggregates, &row, diff, &mut rows, &mut accumulators);
                        // The row's own allocation becomes the key.
                        row.truncate(key_columns);
                        groups.insert(row, (rows, accumulators));
                    }
                });
                for (capability, mut groups) in pending.drain(..) {
                    let mut partials: Vec<Partial> = groups
                        .drain()
                        .map(|(key, (rows, accumulators))| Partial {
                            key,
                            rows,
                            accumulators,
                        })
                        .collect();
                    output.session(&capability).give_container(&mut partials);
                    spare.push(groups);
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::accumulator::AggregateFunction;
    use crate::aggregate::{AggregateExt, AggregateSettings};
    use timely::dataflow::operators::capture::{Event, Extract};
    use timely::dataflow::operators::{Capture, ToStream};

    /// `updates` at their own times (`to_stream` gives every item time 0).
    fn at_their_times<'scope>(
        updates: Vec<Update>,
        scope: timely::dataflow::Scope<'scope, u64>,
    ) -> Stream<'scope, u64, Vec<Update>> {
        updates
            .to_stream(scope)
            .container::<Vec<_>>()
            .unary(Pipeline, "AtTheirTimes", |_, _| {
                move |input, output| {
                    input.for_each(|capability, data| {
                        for update in data.drain(..) {
                            let at = capability.delayed(&update.1, 0);
                            output.session(&at).give(update);
                        }
                    });
                }
            })
    }

    /// The aggregate's contents after `updates`, dealt round-robin to three workers. (Not per
    /// time: a worker may apply a later batch before an earlier one from another worker, so
    /// the changes stamped at one time depend on arrival order with or without combining.)
    fn changes_on_three_workers(
        plan: Arc<AggregatePlan>,
        updates: Vec<Update>,
        combine_before_exchange: bool,
    ) -> BTreeMap<Row, i64> {
        let outputs = timely::execute(timely::Config::process(3), move |worker| {
            let (index, peers) = (worker.index(), worker.peers());
            let mine: Vec<Update> = updates
                .iter()
                .enumerate()
                .filter(|(i, _)| i % peers == index)
                .map(|(_, update)| update.clone())
                .collect();
            let plan = plan.clone();
            worker.dataflow::<u64, _, _>(move |scope| {
                let settings = AggregateSettings {
                    combine_before_exchange,
                    ..AggregateSettings::changes()
                };
                at_their_times(mine, scope)
                    .aggregate(plan, settings)
                    .0
                    .capture()
            })
        })
        .expect("the workers start")
        .join();
        let mut net = BTreeMap::new();
        for captured in outputs {
            let updates = captured.expect("a worker finishes").extract();
            for (row, _, diff) in updates.into_iter().flat_map(|(_, updates)| updates) {
                *net.entry(row).or_insert(0) += diff;
            }
        }
        net.retain(|_, diff| *diff != 0);
        net
    }

    #[test]
    fn combining_before_the_exchange_changes_no_result() {
        let plan = Arc::new(AggregatePlan {
            key_columns: 1,
            aggregates: vec![
                spec(AggregateFunction::CountRows, None),
                spec(AggregateFunction::SumInt, Some(1)),
                spec(AggregateFunction::Avg, Some(2)),
                spec(AggregateFunction::Min, Some(2)),
                spec(AggregateFunction::Max, Some(1)),
                spec(AggregateFunction::CountDistinct, Some(1)),
            ],
            input_retracts: true,
            window: None,
            session: None,
        });
        // Twelve zones over five times, whole numbers so that sums are exact in any order, and
        // every tenth update a retraction of one seen before.
        let mut updates: Vec<Update> = Vec::new();
        for i in 0..600i64 {
            let row = vec![
                Datum::Utf8(format!("z{}", i % 12).into()),
                Datum::Int64(i % 7),
                Datum::Float64((i % 5) as f64),
            ];
            let time = (i / 120) as u64;
            updates.push((row.clone(), time, 1));
            if i % 10 == 9 {
                updates.push((row, time + 1, -1));
            }
        }
        let combined = changes_on_three_workers(plan.clone(), updates.clone(), true);
        let exchanged = changes_on_three_workers(plan, updates, false);
        assert_eq!(combined, exchanged);
        assert_eq!(combined.len(), 12, "one row per zone");
        let count = |zone: &str| {
            let row = combined
                .keys()
                .find(|row| row[0] == Datum::Utf8(zone.into()));
            row.map(|row| row[1].clone())
        };
        // Each zone had 50 rows; each odd zone lost ten (z9's i = 9, 69, …, 549: i ≡ 9 mod
        // 60), even those whose retraction reached the owner before the row did.
        for zone in 0..12 {
            let rows = if zone % 2 == 0 { 50 } else { 40 };
            assert_eq!(
                count(&format!("z{zone}")),
                Some(Datum::Int64(rows)),
                "z{zone}"
            );
        }
    }

    fn spec(function: AggregateFunction, argument: Option<usize>) -> AggregateSpec {
        AggregateSpec {
            function,
            argument,
            order_by: None,
            reference: None,
            filter: None,
        }
    }

    #[test]
    fn a_batch_becomes_one_partial_group_per_key_and_time_that_merges_to_the_rows_result() {
        let plan = Arc::new(AggregatePlan {
            key_columns: 1,
            aggregates: vec![
                spec(AggregateFunction::CountRows, None),
                spec(AggregateFunction::Avg, Some(1)),
                spec(AggregateFunction::Max, Some(1)),
            ],
            input_retracts: true,
            window: None,
            session: None,
        });
        let combined = plan.clone();
        let row = |zone: &str, value: f64| vec![Datum::Utf8(zone.into()), Datum::Float64(value)];
        let updates = vec![
            (row("a", 1.0), 0, 1),
            (row("b", 5.0), 0, 1),
            (row("a", 3.0), 0, 2),
            (row("a", 3.0), 1, 1),
            (row("b", 5.0), 0, -1),
        ];
        let captured = timely::example(move |scope| {
            at_their_times(updates, scope).combine(combined).capture()
        });
        let mut partials: Vec<(u64, Partial)> = captured
            .try_iter()
            .filter_map(|event| match event {
                Event::Messages(stamp, partials) => Some((*stamp.expect_singleton(), partials)),
                Event::Progress(_) => None,
            })
            .flat_map(|(time, partials)| partials.into_iter().map(move |p| (time, p)))
            .collect();
        partials.sort_by(|a, b| (a.0, &a.1.key).cmp(&(b.0, &b.1.key)));
        let results: Vec<(u64, Row, i64, Vec<Datum>)> = partials
            .into_iter()
            .map(|(time, partial)| {
                let results = plan
                    .aggregates
                    .iter()
                    .zip(&partial.accumulators)
                    .map(|(spec, a)| a.result(spec.function))
                    .collect();
                (time, partial.key, partial.rows, results)
            })
            .collect();
        let a = vec![Datum::Utf8("a".into())];
        let b = vec![Datum::Utf8("b".into())];
        assert_eq!(
            results,
            vec![
                (
                    0,
                    a.clone(),
                    3,
                    vec![
                        Datum::Int64(3),
                        Datum::Float64(7.0 / 3.0),
                        Datum::Float64(3.0)
                    ]
                ),
                (0, b, 0, vec![Datum::Int64(0), Datum::Null, Datum::Null]),
                (
                    1,
                    a,
                    1,
                    vec![Datum::Int64(1), Datum::Float64(3.0), Datum::Float64(3.0)]
                ),
            ]
        );
    }
}
