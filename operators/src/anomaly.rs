//! Anomaly scores in the dataflow: `anomaly_score('auto', value) OVER (PARTITION BY sensor_id)`.
//!
//! Each series is scored by its own detector (`vibelux_models`), on one worker, in event-time
//! order (`in_event_time.rs`): the same scores however many workers read the input. Each row
//! leaves with its score appended (NULL while the series' detector warms up).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use timely::dataflow::Stream;
use vibelux_interfaces::checkpoint::Participant;
use vibelux_models::detector::Scorer;

use crate::in_event_time::{PerSeries, SeriesColumns, in_event_time_order};
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

impl PerSeries for Scorer {
    type Spec = AnomalySpec;

    fn start(spec: &AnomalySpec) -> Scorer {
        Scorer::for_values(&spec.detector, &[], spec.values.len()).expect("checked when planned")
    }

    fn take(
        &mut self,
        spec: &AnomalySpec,
        peers: &[Row],
        columns: &SeriesColumns,
        out: &mut Vec<Row>,
    ) {
        for row in peers {
            let mut scored = row[..columns.kept].to_vec();
            let values: Option<Vec<f64>> = spec
                .values
                .iter()
                .map(|&column| row[column].as_f64())
                .collect();
            let score = match (row[spec.time].as_timestamp_nanos(), values) {
                (Some(ts), Some(values)) => self.score_values(ts, &values),
                _ => None,
            };
            scored.push(score.map_or(Datum::Null, Datum::Float64));
            out.push(scored);
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
        let columns = SeriesColumns {
            keys: spec.keys.clone(),
            time: spec.time,
            kept: spec.kept,
        };
        in_event_time_order::<Scorer>(
            self,
            ("ScoreAnomalies", "anomaly detectors"),
            spec,
            columns,
            stop,
            checkpointing,
        )
    }
}
