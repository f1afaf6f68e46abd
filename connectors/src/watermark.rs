//! Event-time watermarks of one source partition.
//!
//! The watermark is the largest event time seen minus the declared delay: the promise that rows
//! older than it are not expected any more. A row older than `watermark - allowed lateness` is
//! late: it is not admitted to the dataflow but sent to the source's late output. Dataflow time
//! (timely timestamps) is this watermark in milliseconds, so timely's progress tracking computes
//! the minimum across partitions and sources for us (see docs/architecture.md).

/// Watermark state of one partition. Times are nanoseconds since the epoch.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WatermarkTracker {
    delay: i64,
    lateness: i64,
    watermark: Option<i64>,
}

/// What became of a row offered to [`WatermarkTracker::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    Late,
}

impl WatermarkTracker {
    pub fn new(delay_nanos: i64, lateness_nanos: i64) -> Self {
        WatermarkTracker {
            delay: delay_nanos,
            lateness: lateness_nanos,
            watermark: None,
        }
    }

    /// Admits a row with `event_time` unless it is beyond the allowed lateness; advances the
    /// watermark past admitted rows.
    pub fn admit(&mut self, event_time: i64) -> Admission {
        if let Some(watermark) = self.watermark
            && event_time < watermark.saturating_sub(self.lateness)
        {
            return Admission::Late;
        }
        self.advance_to(event_time.saturating_sub(self.delay));
        Admission::Admitted
    }

    /// Moves the watermark forward (never back), as a processing-time heartbeat does.
    pub fn advance_to(&mut self, watermark: i64) {
        if self.watermark.is_none_or(|current| current < watermark) {
            self.watermark = Some(watermark);
        }
    }

    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// The dataflow time this partition's rows are emitted at: the watermark in whole
    /// milliseconds (0 before the first row).
    pub fn dataflow_time(&self) -> u64 {
        self.watermark.map_or(0, |watermark| {
            u64::try_from(watermark.div_euclid(1_000_000)).unwrap_or(0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000_000;

    #[test]
    fn the_watermark_trails_the_largest_event_time_by_the_delay() {
        let mut tracker = WatermarkTracker::new(5 * SECOND, 0);
        tracker.admit(100 * SECOND);
        tracker.admit(90 * SECOND + 1);
        assert_eq!(tracker.watermark(), Some(95 * SECOND));
        assert_eq!(tracker.dataflow_time(), 95_000);
    }

    #[test]
    fn rows_older_than_watermark_minus_lateness_are_late() {
        let mut tracker = WatermarkTracker::new(5 * SECOND, 2 * SECOND);
        tracker.admit(100 * SECOND);
        assert_eq!(tracker.admit(93 * SECOND), Admission::Admitted);
        assert_eq!(tracker.admit(93 * SECOND - 1), Admission::Late);
    }

    #[test]
    fn a_heartbeat_never_moves_the_watermark_back() {
        let mut tracker = WatermarkTracker::new(0, 0);
        tracker.advance_to(10);
        tracker.advance_to(5);
        assert_eq!(tracker.watermark(), Some(10));
    }
}
