//! TOP-N per group: `ROW_NUMBER() OVER (PARTITION BY zone ORDER BY temp_avg DESC) <= 3` (the
//! three warmest sensors of each zone) and `ORDER BY … LIMIT n` (one group), over a relation
//! that updates.
//!
//! Each group keeps its rows in order (by the ORDER BY values, then the whole row, so ties
//! are broken the same on every run and every worker count). After each batch, a group whose
//! rows changed compares its first `limit` rows, numbered, before and after: rows that left
//! or moved are retracted with their old number, rows that came or moved are inserted with the
//! new one. An append-only input never takes a row back, so a group keeps only its first
//! `limit` rows; an updating one keeps all of them, since a row beyond the limit comes back
//! when one before it is retracted.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;
use vibelux_interfaces::checkpoint::{Participant, routed_to};

use crate::aggregate::key_hash;
use crate::row::{Datum, Row, Update};

/// One ORDER BY key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SortKey {
    pub column: usize,
    pub descending: bool,
    pub nulls_first: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopNSpec {
    /// The PARTITION BY columns (none for `ORDER BY … LIMIT n`).
    pub partition: Vec<usize>,
    pub order: Vec<SortKey>,
    pub limit: usize,
    /// Whether each row leaves with its number in the group appended (ROW_NUMBER()).
    pub numbered: bool,
    /// Whether the input retracts rows (otherwise a group keeps only its first `limit`).
    pub retracting: bool,
}

/// A row in its group's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Ranked {
    order: Vec<(Datum, bool, bool)>,
    row: Row,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        for ((a, descending, nulls_first), (b, _, _)) in self.order.iter().zip(&other.order) {
            let ordering = match (a.is_null(), b.is_null()) {
                (true, true) => Ordering::Equal,
                (true, false) if *nulls_first => Ordering::Less,
                (true, false) => Ordering::Greater,
                (false, true) if *nulls_first => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) if *descending => b.cmp(a),
                (false, false) => a.cmp(b),
            };
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        self.row.cmp(&other.row)
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Every group's rows with their multiplicities.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Groups(BTreeMap<Row, BTreeMap<Ranked, i64>>);

impl Groups {
    /// The first `limit` rows of `group`, numbered from 1 (a row that is there twice counts
    /// twice).
    fn first(&self, group: &Row, limit: usize) -> Vec<(Row, i64)> {
        let Some(rows) = self.0.get(group) else {
            return Vec::new();
        };
        rows.iter()
            .flat_map(|(ranked, count)| std::iter::repeat_n(&ranked.row, (*count).max(0) as usize))
            .take(limit)
            .enumerate()
            .map(|(index, row)| (row.clone(), index as i64 + 1))
            .collect()
    }
}

fn numbered_row(row: Row, number: i64, numbered: bool) -> Row {
    let mut row = row;
    if numbered {
        row.push(Datum::Int64(number));
    }
    row
}

pub trait TopNExt<'scope> {
    fn top_n(
        self,
        spec: TopNSpec,
        checkpointing: Option<Participant>,
    ) -> Stream<'scope, u64, Vec<Update>>;
}

impl<'scope> TopNExt<'scope> for Stream<'scope, u64, Vec<Update>> {
    fn top_n(
        self,
        spec: TopNSpec,
        checkpointing: Option<Participant>,
    ) -> Stream<'scope, u64, Vec<Update>> {
        let partition = spec.partition.clone();
        let group_of =
            move |row: &Row| -> Row { partition.iter().map(|&c| row[c].clone()).collect() };
        let route_group = group_of.clone();
        let route = move |update: &Update| key_hash(&route_group(&update.0));
        let (worker, peers) = (self.scope().index(), self.scope().peers());
        self.unary_frontier(Exchange::new(route), "TopN", move |_, _| {
            let mut groups = Groups::default();
            let restored: Vec<Groups> =
                Participant::restored_parts(checkpointing.as_ref(), "top-n");
            for part in restored {
                for (group, rows) in part.0 {
                    if routed_to(key_hash(&group), worker, peers) {
                        groups.0.insert(group, rows);
                    }
                }
            }
            let mut waiting: Vec<(Capability<u64>, Vec<Update>)> = Vec::new();
            let mut answered = 0;
            let mut finished = false;
            let mut emitted_up_to = 0u64;
            move |(input, frontier), output| {
                let mut apply = |at: &Capability<u64>,
                                 data: &mut Vec<Update>,
                                 groups: &mut Groups| {
                    let now = *at.time();
                    let touched: HashSet<Row> =
                        data.iter().map(|(row, _, _)| group_of(row)).collect();
                    let before: Vec<(Row, Vec<(Row, i64)>)> = touched
                        .iter()
                        .map(|group| (group.clone(), groups.first(group, spec.limit)))
                        .collect();
                    for (row, _, diff) in data.drain(..) {
                        let group = group_of(&row);
                        let order = spec
                            .order
                            .iter()
                            .map(|key| (row[key.column].clone(), key.descending, key.nulls_first))
                            .collect();
                        let rows = groups.0.entry(group.clone()).or_default();
                        let ranked = Ranked { order, row };
                        match rows.get_mut(&ranked) {
                            Some(count) if *count + diff == 0 => {
                                rows.remove(&ranked);
                            }
                            Some(count) => *count += diff,
                            None => {
                                rows.insert(ranked, diff);
                            }
                        }
                        if !spec.retracting {
                            // Nothing is taken back: rows past the limit never return.
                            while rows.len() > spec.limit {
                                rows.pop_last();
                            }
                        }
                        if rows.is_empty() {
                            groups.0.remove(&group);
                        }
                    }
                    let mut session = output.session(at);
                    for (group, before) in before {
                        let after = groups.first(&group, spec.limit);
                        let mut changes: BTreeMap<(Row, i64), i64> = BTreeMap::new();
                        for entry in before {
                            *changes.entry(entry).or_default() -= 1;
                        }
                        for entry in after {
                            *changes.entry(entry).or_default() += 1;
                        }
                        for ((row, number), diff) in changes {
                            if diff != 0 {
                                emitted_up_to = emitted_up_to.max(now);
                                session.give((numbered_row(row, number, spec.numbered), now, diff));
                            }
                        }
                    }
                };
                input.for_each(|time, data| {
                    let Some(at) = time.retain_least(0) else {
                        return;
                    };
                    let cut = checkpointing.as_ref().and_then(|p| p.pending(answered));
                    if cut.is_some_and(|cut| *at.time() >= cut.time) {
                        waiting.push((at, std::mem::take(data)));
                    } else {
                        apply(&at, data, &mut groups);
                    }
                });
                let frontier = frontier.frontier();
                if let (Some(participant), Some(cut)) = (
                    &checkpointing,
                    checkpointing.as_ref().and_then(|p| p.pending(answered)),
                ) && !frontier.less_than(&cut.time)
                {
                    participant.submit_encoded(cut, &groups);
                    answered = cut.id;
                    for (at, mut data) in waiting.drain(..) {
                        apply(&at, &mut data, &mut groups);
                    }
                }
                if frontier.is_empty() && !finished {
                    finished = true;
                    if let Some(participant) = &checkpointing {
                        participant.submit_final_encoded(&groups, Some(emitted_up_to));
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timely::dataflow::operators::capture::Extract;
    use timely::dataflow::operators::{Capture, ToStream};

    fn text(s: &str) -> Datum {
        Datum::Utf8(s.into())
    }

    /// The net rows of a run of `updates` (zone, sensor, temperature) through the three
    /// warmest per zone.
    fn warmest(updates: Vec<Update>, retracting: bool) -> Vec<Row> {
        let captured = timely::example(move |scope| {
            let spec = TopNSpec {
                partition: vec![0],
                order: vec![SortKey {
                    column: 2,
                    descending: true,
                    nulls_first: true,
                }],
                limit: 2,
                numbered: true,
                retracting,
            };
            updates
                .to_stream(scope)
                .container::<Vec<_>>()
                .top_n(spec, None)
                .capture()
        });
        let mut net: BTreeMap<Row, i64> = BTreeMap::new();
        for (row, _, diff) in captured.extract().into_iter().flat_map(|(_, u)| u) {
            *net.entry(row).or_default() += diff;
        }
        net.into_iter()
            .filter(|(_, diff)| *diff != 0)
            .map(|(row, diff)| {
                assert_eq!(diff, 1, "{row:?}");
                row
            })
            .collect()
    }

    fn reading(zone: &str, sensor: &str, temp: f64) -> Row {
        vec![text(zone), text(sensor), Datum::Float64(temp)]
    }

    #[test]
    fn the_first_rows_of_each_group_numbered_and_corrected_as_rows_leave() {
        let updates = vec![
            (reading("z1", "a", 20.0), 0, 1),
            (reading("z1", "b", 25.0), 0, 1),
            (reading("z1", "c", 22.0), 1, 1),
            (reading("z2", "d", 19.0), 1, 1),
            // b's average changes: it drops to the bottom, c and a move up.
            (reading("z1", "b", 25.0), 2, -1),
            (reading("z1", "b", 18.0), 2, 1),
        ];
        let numbered = |row: Row, n: i64| {
            let mut row = row;
            row.push(Datum::Int64(n));
            row
        };
        assert_eq!(
            warmest(updates, true),
            vec![
                numbered(reading("z1", "a", 20.0), 2),
                numbered(reading("z1", "c", 22.0), 1),
                numbered(reading("z2", "d", 19.0), 1),
            ]
        );
    }

    #[test]
    fn an_append_only_input_keeps_only_the_first_rows() {
        let updates = (0..50)
            .map(|i| (reading("z1", &format!("s{i}"), f64::from(i)), i as u64, 1))
            .collect();
        let rows = warmest(updates, false);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][2], Datum::Float64(48.0));
        assert_eq!(rows[1][2], Datum::Float64(49.0));
    }
}
