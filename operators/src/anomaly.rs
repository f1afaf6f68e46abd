//! Anomaly scores in the dataflow: `anomaly_score('auto', value) OVER (PARTITION BY sensor_id)`.
//!
//! Rows are routed by their partition key, so each series is scored by one worker by its own
//! detector (`vibelux_models`). A detector is order-sensitive, so a row waits until the
//! frontier has passed its event time (no earlier reading of the series can still come) and
//! rows are scored in event-time order: the same scores however many workers read the input.
//! Each row leaves with its score appended (NULL while the series' detector warms up).

use std::sync::Arc;

use std::collections::BTreeMap;

use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
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
///     rows.to_stream(scope).score_anomalies(spec.clone()).capture()
/// });
/// let rows: Vec<Row> = captured.extract().into_iter().flat_map(|(_, rows)| rows).collect();
/// assert_eq!(rows.len(), 30);
/// assert_eq!(rows[0][3], Datum::Null, "warming up");
/// assert_eq!(rows[29][3], Datum::Float64(0.0), "readings every minute: no gap");
/// ```
pub trait ScoreAnomaliesExt<'scope> {
    fn score_anomalies(self, spec: Arc<AnomalySpec>) -> Stream<'scope, u64, Vec<Row>>;
}

impl<'scope> ScoreAnomaliesExt<'scope> for Stream<'scope, u64, Vec<Row>> {
    fn score_anomalies(self, spec: Arc<AnomalySpec>) -> Stream<'scope, u64, Vec<Row>> {
        let keys = spec.keys.clone();
        let exchange = Exchange::new(move |row: &Row| {
            let key: Row = keys.iter().map(|&column| row[column].clone()).collect();
            key_hash(&key)
        });
        let mut builder = OperatorBuilder::new("ScoreAnomalies".to_owned(), self.scope());
        let mut input = builder.new_input(self, exchange);
        let (output, scored) = builder.new_output();
        let mut output = OutputBuilder::from(output);
        builder.build(move |_initial_capabilities| {
            let mut series: StateMap<Row, Scorer> = StateMap::default();
            // Rows by the dataflow time (ms) after which they can be scored.
            let mut waiting: BTreeMap<u64, (Capability<u64>, Vec<Row>)> = BTreeMap::new();
            move |frontiers| {
                let mut handle = output.activate();
                input.for_each(|time, data| {
                    let Some(&now) = time.least() else { return };
                    for row in data.drain(..) {
                        let millis = row[spec.time]
                            .as_timestamp_nanos()
                            .map_or(0, |nanos| nanos.div_euclid(1_000_000).max(0) as u64);
                        let release = (millis + 1).max(now);
                        waiting
                            .entry(release)
                            .or_insert_with(|| (time.delayed(&release, 0), Vec::new()))
                            .1
                            .push(row);
                    }
                });
                let frontier = frontiers[0].frontier();
                while let Some(entry) = waiting.first_entry() {
                    if frontier.less_than(entry.key()) {
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
                        let scorer = series.entry(key).or_insert_with(|| {
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
                    handle.session(&capability).give_container(&mut out);
                }
            }
        });
        scored
    }
}
