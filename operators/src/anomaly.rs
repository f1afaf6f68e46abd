//! Anomaly scores in the dataflow: `anomaly_score('auto', value) OVER (PARTITION BY sensor_id)`.
//!
//! Rows are routed by their partition key, so each series is scored by one worker by its own
//! detector (`vibelux_models`). A detector is order-sensitive, so a row waits until the
//! frontier has passed its event time (no earlier reading of the series can still come) and
//! rows are scored in event-time order: the same scores however many workers read the input.
//! Each row leaves with its score appended (NULL while the series' detector warms up).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use vibelux_interfaces::checkpoint::{Participant, encode, in_key_order, routed_to};
use vibelux_models::detector::Scorer;

use crate::aggregate::{StateMap, key_hash};
use crate::row::{Datum, Row};

/// What to score: the input's columns `0..kept` pass through, followed by the score.
#[derive(Debug, Clone)]
pub struct AnomalySpec {
    pub detector: String,
    /// The partition key's columns.
    pub keys: Vec<usize>,
    /// The scored values' columns: one, or several for a detector that scores them together.
    pub values: Vec<usize>,
    /// The event-time column.
    pub time: usize,
    pub kept: usize,
}

/// Scores each row's value within its series.
///
/// ```
/// use std::sync::Arc;
/// use timely::dataflow::operators::{Capture, ToStream, capture::Extract};
/// use vibelux_operators::anomaly::{AnomalySpec, ScoreAnomaliesExt};
/// use vibelux_operators::row::{Datum, Row};
///
/// let spec = Arc::new(AnomalySpec { detector: "gap".into(), keys: vec![0], values: vec![2], time: 1, kept: 3 });
/// let captured = timely::example(move |scope| {
///     let rows: Vec<Row> = (0..30)
///         .map(|i| vec![Datum::Utf8("s1".into()), Datum::Timestamp(i * 60_000_000_000), Datum::Float64(1.0)])
///         .collect();
///     rows.to_stream(scope).score_anomalies(spec.clone(), Default::default(), None).capture()
/// });
/// let rows: Vec<Row> = captured.extract().into_iter().flat_map(|(_, rows)| rows).collect();
/// assert_eq!(rows.len(), 30);
/// assert_eq!(rows[0][3], Datum::Null, "warming up");
/// assert_eq!(rows[29][3], Datum::Float64(0.0), "readings every minute: no gap");
/// ```
pub trait ScoreAnomaliesExt<'scope> {
    /// With `checkpointing`, the detectors and the rows waiting take part in checkpoints, and
    /// resume from the one the run restored.
    fn score_anomalies(
        self,
        spec: Arc<AnomalySpec>,
        stop: Arc<AtomicBool>,
        checkpointing: Option<Participant>,
    ) -> Stream<'scope, u64, Vec<Row>>;
}

/// What a checkpoint keeps: every series' detector, and the rows waiting for the frontier by the
/// time they are released at.
#[derive(Serialize, Deserialize)]
struct Checkpointed {
    series: Vec<(Row, Scorer)>,
    waiting: Vec<(u64, Vec<Row>)>,
}

/// The detectors of one worker's series and the rows waiting to be scored.
struct Series {
    spec: Arc<AnomalySpec>,
    detectors: StateMap<Row, Scorer>,
    /// Rows by the dataflow time (ms) after which they can be scored.
    waiting: BTreeMap<u64, (Capability<u64>, Vec<Row>)>,
}

impl Series {
    /// Takes a batch stamped at `at`'s time: each row waits for the frontier to pass its
    /// event time.
    fn take(&mut self, at: &Capability<u64>, data: &mut Vec<Row>) {
        let now = *at.time();
        for row in data.drain(..) {
            let millis = row[self.spec.time]
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

    /// Scores the rows the frontier has released, up to (not including) `before`; returns
    /// each release's capability with its scored rows.
    fn release(
        &mut self,
        frontier: timely::progress::frontier::AntichainRef<'_, u64>,
        before: u64,
    ) -> Vec<(Capability<u64>, Vec<Row>)> {
        let spec = self.spec.clone();
        let mut released = Vec::new();
        while let Some(entry) = self.waiting.first_entry() {
            if frontier.less_than(entry.key()) || *entry.key() >= before {
                break;
            }
            let (capability, mut rows) = entry.remove();
            rows.sort_by(|a, b| {
                (&a[spec.time], a)
                    .partial_cmp(&(&b[spec.time], b))
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let key: Row = spec
                    .keys
                    .iter()
                    .map(|&column| row[column].clone())
                    .collect();
                let scorer = self.detectors.entry(key).or_insert_with(|| {
                    Scorer::for_values(&spec.detector, &[], spec.values.len())
                        .expect("checked when planned")
                });
                let values: Option<Vec<f64>> = spec
                    .values
                    .iter()
                    .map(|&column| row[column].as_f64())
                    .collect();
                let score = match (row[spec.time].as_timestamp_nanos(), values) {
                    (Some(ts), Some(values)) => scorer.score_values(ts, &values),
                    _ => None,
                };
                let mut scored: Row = row[..spec.kept].to_vec();
                scored.push(score.map_or(Datum::Null, Datum::Float64));
                out.push(scored);
            }
            released.push((capability, out));
        }
        released
    }

    fn checkpoint(&self) -> Vec<u8> {
        encode(&Checkpointed {
            series: in_key_order(&self.detectors),
            waiting: self
                .waiting
                .iter()
                .map(|(release, (_, rows))| (*release, rows.clone()))
                .collect(),
        })
    }

    fn restore(&mut self, checkpointed: Checkpointed, initial: &Capability<u64>) {
        self.detectors.extend(checkpointed.series);
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

impl<'scope> ScoreAnomaliesExt<'scope> for Stream<'scope, u64, Vec<Row>> {
    fn score_anomalies(
        self,
        spec: Arc<AnomalySpec>,
        stop: Arc<AtomicBool>,
        checkpointing: Option<Participant>,
    ) -> Stream<'scope, u64, Vec<Row>> {
        let keys = spec.keys.clone();
        let route = move |row: &Row| {
            let key: Row = keys.iter().map(|&column| row[column].clone()).collect();
            key_hash(&key)
        };
        let exchange = Exchange::new(route.clone());
        let (worker, peers) = (self.scope().index(), self.scope().peers());
        let mut builder = OperatorBuilder::new("ScoreAnomalies".to_owned(), self.scope());
        let mut input = builder.new_input(self, exchange);
        let (output, scored) = builder.new_output();
        let mut output = OutputBuilder::from(output);
        builder.build(move |initial_capabilities| {
            let mut state = Series {
                spec: spec.clone(),
                detectors: StateMap::default(),
                waiting: BTreeMap::new(),
            };
            let restored: Vec<Checkpointed> =
                Participant::restored_parts(checkpointing.as_ref(), "anomaly detectors");
            for mut checkpointed in restored {
                // Another worker count: keep the series routed here now.
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
                // A stopped run's frontier moves on as each worker's source stops, but readings
                // before the rows waiting may still come after a restart: from the moment it
                // stops, a checkpointed run keeps them waiting.
                let stopped = checkpointing.is_some() && stop.load(Ordering::Relaxed);
                let cut = checkpointing.as_ref().and_then(|p| p.pending(answered));
                let before = cut.map_or(u64::MAX, |cut| cut.time);
                if !stopped {
                    for (capability, mut rows) in state.release(frontier, before) {
                        emitted_up_to = emitted_up_to.max(*capability.time());
                        handle.session(&capability).give_container(&mut rows);
                    }
                }
                if let (Some(participant), Some(cut)) = (&checkpointing, cut)
                    && !frontier.less_than(&cut.time)
                {
                    participant.submit(cut, state.checkpoint());
                    answered = cut.id;
                    for (at, mut data) in held.drain(..) {
                        state.take(&at, &mut data);
                    }
                    if !stopped {
                        for (capability, mut rows) in state.release(frontier, u64::MAX) {
                            emitted_up_to = emitted_up_to.max(*capability.time());
                            handle.session(&capability).give_container(&mut rows);
                        }
                    }
                }
                if frontier.is_empty() && !finished {
                    finished = true;
                    if let Some(participant) = &checkpointing {
                        participant.submit_final_after(state.checkpoint(), emitted_up_to);
                    }
                    state.waiting.clear();
                }
            }
        });
        scored
    }
}
