//! Event-time watermarks of a source on one worker.
//!
//! A partition's watermark is the largest event time seen minus the declared delay: the promise that rows
//! older than it are not expected any more. A row older than `watermark - allowed lateness` is
//! late: it is not admitted to the dataflow but sent to the source's late output. Dataflow time
//! (timely timestamps) is this watermark in milliseconds, so timely's progress tracking computes
//! the minimum across partitions and sources for us (see docs/architecture.md).

/// What became of a row offered to [`WorkerWatermark::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    Late,
}

/// The watermark of one worker reading several partitions (a Kafka consumer's assignment): the
/// least of its partitions' watermarks, so a partition that is behind (replaying a backlog)
/// holds windows open until it catches up. A partition silent for `idle_timeout` stops holding
/// the others back; when all are silent a live input follows the clock. The combined watermark
/// never moves back, and a row is late only against it: a partition's own progress closes no
/// window.
/// A worker's watermark state as a checkpoint keeps it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WatermarkState {
    partitions: Vec<(u32, Option<i64>)>,
    combined: Option<i64>,
}

impl WatermarkState {
    /// One state standing for several (workers of a checkpoint taken with another worker
    /// count): each partition at the least of its watermarks, and the least combined
    /// watermark, so that no row is late that was not late for the worker that read it.
    /// `None` for no states.
    pub fn merged(states: Vec<WatermarkState>) -> Option<WatermarkState> {
        if states.len() <= 1 {
            return states.into_iter().next();
        }
        let mut partitions: std::collections::BTreeMap<u32, Option<i64>> = Default::default();
        for (partition, watermark) in states.iter().flat_map(|state| &state.partitions) {
            partitions
                .entry(*partition)
                .and_modify(|held| {
                    *held = match (*held, *watermark) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        _ => None,
                    }
                })
                .or_insert(*watermark);
        }
        let combined = states.iter().filter_map(|state| state.combined).min();
        Some(WatermarkState {
            partitions: partitions.into_iter().collect(),
            combined,
        })
    }
}

#[derive(Debug)]
pub struct WorkerWatermark {
    delay: i64,
    lateness: i64,
    idle_timeout: std::time::Duration,
    /// Per partition: max event time − delay (`None`: assigned, nothing read yet), and when it
    /// last had input (or was assigned).
    partitions: std::collections::BTreeMap<u32, (Option<i64>, std::time::Instant)>,
    combined: Option<i64>,
    /// When the worker last had input on any partition (or started).
    last_input: std::time::Instant,
}

impl WorkerWatermark {
    pub fn new(delay_nanos: i64, lateness_nanos: i64, idle_timeout: std::time::Duration) -> Self {
        WorkerWatermark {
            delay: delay_nanos,
            lateness: lateness_nanos,
            idle_timeout,
            partitions: Default::default(),
            combined: None,
            last_input: std::time::Instant::now(),
        }
    }

    /// Registers a partition this worker was assigned: until it has input or goes quiet for
    /// `idle_timeout`, it holds the watermark back (its backlog may be older than the others).
    pub fn expect(&mut self, partition: u32, now: std::time::Instant) {
        self.partitions.entry(partition).or_insert((None, now));
    }

    /// Admits a row of `partition` unless it is beyond the allowed lateness of the combined
    /// watermark; advances the partition's watermark past admitted rows.
    pub fn admit(&mut self, partition: u32, event_time: i64, now: std::time::Instant) -> Admission {
        if let Some(combined) = self.combined
            && event_time < combined.saturating_sub(self.lateness)
        {
            return Admission::Late;
        }
        let watermark = event_time.saturating_sub(self.delay);
        let entry = self.partitions.entry(partition).or_insert((None, now));
        entry.0 = Some(entry.0.map_or(watermark, |seen| seen.max(watermark)));
        entry.1 = now;
        self.last_input = now;
        // Row by row (not per batch), so which rows are late does not depend on batch sizes.
        self.update(now, None);
        Admission::Admitted
    }

    /// Recomputes the combined watermark after a batch; `clock` is wall time (ns) for live
    /// inputs, `None` for replays.
    pub fn update(&mut self, now: std::time::Instant, clock: Option<i64>) {
        // The least watermark of the partitions heard from lately (no allocation: this runs
        // for every row); an active partition that has read nothing yet holds everything back.
        let (mut active, mut unread, mut least) = (false, false, None::<i64>);
        for (watermark, last_input) in self.partitions.values() {
            if now.duration_since(*last_input) >= self.idle_timeout {
                continue;
            }
            active = true;
            match watermark {
                None => unread = true,
                Some(watermark) => least = Some(least.map_or(*watermark, |l| l.min(*watermark))),
            }
        }
        let candidate = if active {
            if unread { None } else { least }
        } else if now.duration_since(self.last_input) >= self.idle_timeout {
            clock.map(|clock| clock.saturating_sub(self.delay))
        } else {
            None
        };
        if let Some(candidate) = candidate
            && self.combined.is_none_or(|current| current < candidate)
        {
            self.combined = Some(candidate);
        }
    }

    pub fn watermark(&self) -> Option<i64> {
        self.combined
    }

    /// What a checkpoint keeps: each partition's watermark and the combined one. When each
    /// partition last had input is wall-clock bookkeeping, and starts again at a restore.
    pub fn state(&self) -> WatermarkState {
        WatermarkState {
            partitions: self
                .partitions
                .iter()
                .map(|(partition, (watermark, _))| (*partition, *watermark))
                .collect(),
            combined: self.combined,
        }
    }

    /// Takes back the state a checkpoint kept.
    pub fn restore(&mut self, state: WatermarkState, now: std::time::Instant) {
        self.partitions = state
            .partitions
            .into_iter()
            .map(|(partition, watermark)| (partition, (watermark, now)))
            .collect();
        self.combined = state.combined;
        self.last_input = now;
    }

    /// Dataflow time: the combined watermark in whole milliseconds (0 before any).
    pub fn dataflow_time(&self) -> u64 {
        self.combined.map_or(0, |watermark| {
            u64::try_from(watermark.div_euclid(1_000_000)).unwrap_or(0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000_000;

    fn one_partition(delay: i64, lateness: i64) -> WorkerWatermark {
        WorkerWatermark::new(delay, lateness, std::time::Duration::from_secs(10))
    }

    #[test]
    fn the_watermark_trails_the_largest_event_time_by_the_delay() {
        let now = std::time::Instant::now();
        let mut tracker = one_partition(5 * SECOND, 0);
        tracker.admit(0, 100 * SECOND, now);
        tracker.admit(0, 90 * SECOND + 1, now);
        assert_eq!(tracker.watermark(), Some(95 * SECOND));
        assert_eq!(tracker.dataflow_time(), 95_000);
    }

    #[test]
    fn rows_older_than_watermark_minus_lateness_are_late() {
        let now = std::time::Instant::now();
        let mut tracker = one_partition(5 * SECOND, 2 * SECOND);
        tracker.admit(0, 100 * SECOND, now);
        assert_eq!(tracker.admit(0, 93 * SECOND, now), Admission::Admitted);
        assert_eq!(tracker.admit(0, 93 * SECOND - 1, now), Admission::Late);
    }

    #[test]
    fn a_heartbeat_never_moves_the_watermark_back() {
        let mut tracker = one_partition(0, 0);
        let quiet = std::time::Instant::now() + std::time::Duration::from_secs(10);
        tracker.update(quiet, Some(10));
        tracker.update(quiet, Some(5));
        assert_eq!(tracker.watermark(), Some(10));
    }

    #[test]
    fn a_worker_waits_for_its_slowest_partition_until_it_goes_quiet() {
        let start = std::time::Instant::now();
        let idle = std::time::Duration::from_secs(10);
        let mut watermark = WorkerWatermark::new(SECOND, 0, idle);
        watermark.expect(0, start);
        watermark.expect(1, start);
        watermark.admit(0, 100 * SECOND, start);
        assert_eq!(
            watermark.watermark(),
            None,
            "partition 1 has not been read yet"
        );
        watermark.admit(1, 50 * SECOND, start);
        watermark.update(start, None);
        assert_eq!(watermark.watermark(), Some(49 * SECOND));
        // Partition 1 is behind, so its next rows are on time though partition 0 is far ahead.
        assert_eq!(watermark.admit(1, 60 * SECOND, start), Admission::Admitted);
        assert_eq!(watermark.watermark(), Some(59 * SECOND));
        assert_eq!(watermark.admit(0, 58 * SECOND, start), Admission::Late);
        // Partition 1 goes quiet: partition 0 alone decides, and the watermark never goes back.
        let later = start + idle;
        watermark.admit(0, 120 * SECOND, later);
        watermark.update(later, None);
        assert_eq!(watermark.watermark(), Some(119 * SECOND));
        watermark.admit(1, 119 * SECOND, later);
        watermark.update(later, None);
        assert_eq!(watermark.watermark(), Some(119 * SECOND));
        // Everyone quiet: a live input follows the clock.
        watermark.update(later + idle, Some(500 * SECOND));
        assert_eq!(watermark.dataflow_time(), 499_000);
    }
}
