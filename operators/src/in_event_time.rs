//! Functions of a series taken in event-time order: the frame of `anomaly_score` and of the
//! analytic window functions (`LAG`, running aggregates).
//!
//! Such a function depends on the order of a series' rows, and rows arrive out of order and on
//! any worker. So rows are routed by their partition key (each series lives on one worker), a
//! row waits until the frontier has passed its event time (no earlier row of its series can
//! still come), and the rows released together are taken in event-time order, the rows of one
//! series at one instant together (peers, for frames that include them). The results are then
//! the same however many workers read the input, and whatever order it came in. Each row
//! leaves with the function's values appended.
//!
//! What each series keeps is the function's business ([`PerSeries`]); this operator keeps the
//! series, the rows waiting, and their part of checkpoints.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use vibelux_interfaces::checkpoint::{Participant, in_key_order, routed_to};

use crate::aggregate::{StateMap, key_hash};
use crate::row::Row;

/// Where a series function finds its rows' parts: the input's columns `0..kept` pass through,
/// then come the function's own columns.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesColumns {
    /// The partition key's columns.
    pub keys: Vec<usize>,
    /// The event-time column.
    pub time: usize,
    pub kept: usize,
}

/// What one series keeps between its rows.
pub trait PerSeries: Clone + Serialize + DeserializeOwned + 'static {
    /// What the function was planned with.
    type Spec: Send + Sync + 'static;

    /// A series' state before its first row.
    fn start(spec: &Self::Spec) -> Self;

    /// Takes the rows of the series at one instant (`peers`, ordered; their event time in
    /// column `time`), and pushes to `out` what leaves: as a rule each peer's first `kept`
    /// columns with its results appended, in order (a function whose results later rows change
    /// pushes updates instead, see `analytic.rs`).
    fn take(
        &mut self,
        spec: &Self::Spec,
        peers: &[Row],
        columns: &SeriesColumns,
        out: &mut Vec<Row>,
    );
}

/// What a checkpoint keeps: every series' state, and the rows waiting for the frontier by the
/// time they are released at.
#[derive(Serialize, Deserialize)]
struct Checkpointed<S, E = Vec<(Row, S)>, W = Vec<(u64, Vec<Row>)>> {
    /// Owned when read back, borrowed from the state when written.
    series: E,
    waiting: W,
    #[serde(skip)]
    of: std::marker::PhantomData<S>,
}

/// One worker's series and the rows waiting for the frontier.
struct Series<S: PerSeries> {
    spec: Arc<S::Spec>,
    columns: SeriesColumns,
    states: StateMap<Row, S>,
    /// Rows by the dataflow time (ms) after which they can be taken.
    waiting: BTreeMap<u64, (Capability<u64>, Vec<Row>)>,
}

impl<S: PerSeries> Series<S> {
    fn key(&self, row: &Row) -> Row {
        self.columns
            .keys
            .iter()
            .map(|&column| row[column].clone())
            .collect()
    }

    /// Takes a batch stamped at `at`'s time: each row waits for the frontier to pass its
    /// event time.
    fn take(&mut self, at: &Capability<u64>, data: &mut Vec<Row>) {
        let now = *at.time();
        for row in data.drain(..) {
            let millis = row[self.columns.time]
                .as_timestamp_nanos()
                .map_or(0, |nanos| nanos.div_euclid(1_000_000).max(0) as u64);
            let release = (millis + 1).max(now);
            self.waiting
                .entry(release)
                .or_insert_with(|| (at.delayed(&release), Vec::new()))
                .1
                .push(row);
        }
    }

    /// Takes the rows the frontier has released, up to (not including) `before`, as one batch
    /// at the earliest release's time (a row may leave earlier than its own release time, never
    /// later, and one batch per activation rather than one per millisecond of event time keeps
    /// the operators downstream from working row by row); returns it with the rows' results.
    fn release(
        &mut self,
        frontier: timely::progress::frontier::AntichainRef<'_, u64>,
        before: u64,
    ) -> Option<(Capability<u64>, Vec<Row>)> {
        let mut released: Option<(Capability<u64>, Vec<Row>)> = None;
        while let Some(entry) = self.waiting.first_entry() {
            if frontier.less_than(entry.key()) || *entry.key() >= before {
                break;
            }
            let (capability, rows) = entry.remove();
            match &mut released {
                None => released = Some((capability, rows)),
                Some((_, all)) => all.extend(rows),
            }
        }
        let (capability, rows) = released?;
        let time = self.columns.time;
        let mut keyed: Vec<(Row, Row)> =
            rows.into_iter().map(|row| (self.key(&row), row)).collect();
        keyed.sort_by(|(a_key, a), (b_key, b)| {
            (&a[time], a_key, a)
                .partial_cmp(&(&b[time], b_key, b))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let mut out = Vec::with_capacity(keyed.len());
        let mut keyed = keyed.into_iter().peekable();
        while let Some((key, first)) = keyed.next() {
            let mut peers = vec![first];
            while let Some((next_key, next)) = keyed.peek() {
                if *next_key != key || next[time] != peers[0][time] {
                    break;
                }
                peers.extend(keyed.next().map(|(_, row)| row));
            }
            let spec = &self.spec;
            self.states
                .entry(key)
                .or_insert_with(|| S::start(spec))
                .take(spec, &peers, &self.columns, &mut out);
        }
        Some((capability, out))
    }

    fn checkpointed(&self) -> impl Serialize + '_ {
        Checkpointed::<S, _, _> {
            series: in_key_order(&self.states),
            waiting: self
                .waiting
                .iter()
                .map(|(release, (_, rows))| (*release, rows))
                .collect::<Vec<_>>(),
            of: std::marker::PhantomData,
        }
    }

    fn restore(&mut self, checkpointed: Checkpointed<S>, initial: &Capability<u64>) {
        self.states.extend(checkpointed.series);
        for (release, rows) in checkpointed.waiting {
            if rows.is_empty() {
                continue;
            }
            self.waiting
                .entry(release)
                .or_insert_with(|| (initial.delayed(&release), Vec::new()))
                .1
                .extend(rows);
        }
    }
}

/// Runs a series function over a stream of rows. `name` names the operator, `what` its state in
/// messages; with `checkpointing`, the series and the rows waiting take part in checkpoints
/// and resume from the one the run restored (with another worker count, each worker keeps the
/// series routed to it now).
pub fn in_event_time_order<'scope, S: PerSeries>(
    rows: Stream<'scope, u64, Vec<Row>>,
    (name, what): (&str, &'static str),
    spec: Arc<S::Spec>,
    columns: SeriesColumns,
    stop: Arc<AtomicBool>,
    checkpointing: Option<Participant>,
) -> Stream<'scope, u64, Vec<Row>> {
    let keys = columns.keys.clone();
    let route = move |row: &Row| {
        let key: Row = keys.iter().map(|&column| row[column].clone()).collect();
        key_hash(&key)
    };
    let exchange = Exchange::new(route.clone());
    let (worker, peers) = (rows.scope().index(), rows.scope().peers());
    let mut builder = OperatorBuilder::new(name.to_owned(), rows.scope());
    let mut input = builder.new_input(rows, exchange);
    let (output, results) = builder.new_output();
    let mut output = OutputBuilder::from(output);
    builder.build(move |initial_capabilities| {
        let mut state = Series::<S> {
            spec: spec.clone(),
            columns: columns.clone(),
            states: StateMap::default(),
            waiting: BTreeMap::new(),
        };
        let restored: Vec<Checkpointed<S>> =
            Participant::restored_parts(checkpointing.as_ref(), what);
        for mut checkpointed in restored {
            checkpointed
                .series
                .retain(|(key, _)| routed_to(key_hash(key), worker, peers));
            for (_, rows) in &mut checkpointed.waiting {
                rows.retain(|row| routed_to(route(row), worker, peers));
            }
            state.restore(checkpointed, &initial_capabilities[0]);
        }
        // Batches stamped at or after a cut being taken wait here until the snapshot.
        let mut held: Vec<(Capability<u64>, Vec<Row>)> = Vec::new();
        let mut answered = 0;
        let mut finished = false;
        // The latest time an output was stamped at, for the final part.
        let mut emitted_up_to = 0u64;
        move |frontiers| {
            let mut handle = output.activate();
            input.for_each(|time, data| {
                let Some(at) = time.retain_least(0) else {
                    return;
                };
                let cut = checkpointing.as_ref().and_then(|p| p.pending(answered));
                if cut.is_some_and(|cut| *at.time() >= cut.time) {
                    held.push((at, std::mem::take(data)));
                } else {
                    state.take(&at, data);
                }
            });
            let frontier = frontiers[0].frontier();
            // A stopped run's frontier moves on as each worker's source stops, but rows before
            // the ones waiting may still come after a restart: from the moment it stops, a
            // checkpointed run keeps them waiting.
            let stopped = checkpointing.is_some() && stop.load(Ordering::Relaxed);
            let cut = checkpointing.as_ref().and_then(|p| p.pending(answered));
            let before = cut.map_or(u64::MAX, |cut| cut.time);
            if !stopped && let Some((capability, mut rows)) = state.release(frontier, before) {
                emitted_up_to = emitted_up_to.max(*capability.time());
                handle.session(&capability).give_container(&mut rows);
            }
            if let (Some(participant), Some(cut)) = (&checkpointing, cut)
                && !frontier.less_than(&cut.time)
            {
                participant.submit_encoded(cut, &state.checkpointed());
                answered = cut.id;
                for (at, mut data) in held.drain(..) {
                    state.take(&at, &mut data);
                }
                if !stopped && let Some((capability, mut rows)) = state.release(frontier, u64::MAX)
                {
                    emitted_up_to = emitted_up_to.max(*capability.time());
                    handle.session(&capability).give_container(&mut rows);
                }
            }
            if frontier.is_empty() && !finished {
                finished = true;
                if let Some(participant) = &checkpointing {
                    participant.submit_final_encoded(&state.checkpointed(), Some(emitted_up_to));
                }
                state.waiting.clear();
            }
        }
    });
    results
}
