//! Resuming a simulated facility where a checkpoint left it.
//!
//! A checkpoint keeps the simulated clock (the next tick), where each sensor's random stream
//! is (its word position: the stream is seeded, so the position is all of its state), each
//! sensor's last values (a stuck sensor repeats them) and the readings generated but not yet
//! delivered (disorder holds some back). A resumed simulation therefore produces exactly the
//! readings the interrupted one would have produced next.
//!
//! Its clock: a facility simulated in real time from now goes on in real time, so the readings
//! of the time the engine was down arrive at once, as a gateway's buffer would deliver them. A
//! simulation at another speed, or from a fixed start, pauses while the engine is down and
//! continues from where it was.

use std::cmp::Reverse;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use vibelux_operators::row::Row;

use super::{SimulatorReader, Speed};

#[derive(Serialize, Deserialize)]
struct Checkpointed {
    start: i64,
    next_tick: i64,
    /// Simulated time when the checkpoint was taken.
    simulated_now: i64,
    sequence: u64,
    /// Each of this worker's sensors: its random stream's word position and last values.
    sensors: Vec<(u128, Option<[f64; 4]>)>,
    /// Readings waiting for their arrival: arrival, sequence, row, event time.
    pending: Vec<(i64, u64, Row, i64)>,
}

impl SimulatorReader {
    pub(super) fn checkpoint(&self) -> Vec<u8> {
        let checkpointed = Checkpointed {
            start: self.start,
            next_tick: self.next_tick,
            simulated_now: self.simulated_now(),
            sequence: self.sequence,
            sensors: self
                .sensors
                .iter()
                .map(|sensor| (sensor.rng.get_word_pos(), sensor.last))
                .collect(),
            pending: self
                .pending
                .iter()
                .map(|Reverse(reading)| reading.clone())
                .collect(),
        };
        vibelux_interfaces::checkpoint::encode(&checkpointed)
    }

    /// The start the checkpoint's simulation had (its faults are placed from it).
    pub fn checkpointed_start(checkpoint: &[u8]) -> Result<i64, String> {
        let checkpointed: Checkpointed =
            vibelux_interfaces::checkpoint::decode("simulator position", checkpoint)?;
        Ok(checkpointed.start)
    }

    /// Moves a reader made for the same facility (and worker) to a checkpointed position.
    pub fn resume(&mut self, checkpoint: &[u8]) -> Result<(), String> {
        let checkpointed: Checkpointed =
            vibelux_interfaces::checkpoint::decode("simulator position", checkpoint)?;
        if checkpointed.sensors.len() != self.sensors.len() {
            return Err(format!(
                "the checkpoint simulated {} sensors on this worker, the pipeline {}",
                checkpointed.sensors.len(),
                self.sensors.len()
            ));
        }
        for (sensor, (word, last)) in self.sensors.iter_mut().zip(checkpointed.sensors) {
            sensor.rng.set_word_pos(word);
            sensor.last = last;
        }
        self.start = checkpointed.start;
        self.next_tick = checkpointed.next_tick;
        self.sequence = checkpointed.sequence;
        self.pending = checkpointed.pending.into_iter().map(Reverse).collect();
        self.restart_clock(checkpointed.simulated_now);
        Ok(())
    }

    /// Starts the clock again: from now for a facility following the wall clock, else from
    /// the simulated time the checkpoint was taken at.
    fn restart_clock(&mut self, simulated_now: i64) {
        let follows_wall_clock =
            self.config.speed == Speed::Realtime && self.config.start_nanos.is_none();
        self.started_at = Instant::now();
        self.clock_origin = if follows_wall_clock {
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
        } else {
            simulated_now
        };
    }
}

impl SimulatorReader {
    /// Resumes from a checkpoint taken with another number of workers (`checkpoints`, one per
    /// old worker): this reader's sensors take their streams and last values from the old
    /// worker that had them, and each reads on from that worker's clock; readings held back
    /// by old workers are shared out among the new ones (any worker may deliver them).
    pub fn resume_rescaled(
        &mut self,
        checkpoints: &[Vec<u8>],
        worker: usize,
        peers: usize,
    ) -> Result<(), String> {
        let old: Vec<Checkpointed> = checkpoints
            .iter()
            .map(|part| vibelux_interfaces::checkpoint::decode("simulator position", part))
            .collect::<Result<_, _>>()?;
        let old_peers = old.len();
        let Some(earliest) = old.iter().min_by_key(|part| part.next_tick) else {
            return Ok(());
        };
        let (start, next_tick, simulated_now) =
            (earliest.start, earliest.next_tick, earliest.simulated_now);
        for sensor in &mut self.sensors {
            let owner = sensor.index % old_peers;
            let position = sensor.index / old_peers;
            let (word, last) = *old[owner].sensors.get(position).ok_or_else(|| {
                format!(
                    "the checkpoint simulated fewer sensors than the pipeline ({} on worker \
                     {owner})",
                    old[owner].sensors.len()
                )
            })?;
            sensor.rng.set_word_pos(word);
            sensor.last = last;
            sensor.from_tick = old[owner].next_tick;
        }
        self.start = start;
        self.next_tick = next_tick;
        self.sequence = old.iter().map(|part| part.sequence).max().unwrap_or(0);
        self.pending = old
            .into_iter()
            .enumerate()
            .filter(|(owner, _)| owner % peers == worker)
            .flat_map(|(_, part)| part.pending)
            .map(Reverse)
            .collect();
        self.restart_clock(simulated_now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::{SimulatorConfig, simulator_schema};
    use crate::source::{Poll, Record, SourceReader};

    fn config() -> SimulatorConfig {
        SimulatorConfig {
            rooms: 1,
            zones_per_room: 2,
            sensors_per_zone: 3,
            speed: Speed::Max,
            duration_nanos: Some(super::super::HOUR),
            interval_nanos: 10 * super::super::SECOND,
            disorder_nanos: 20 * super::super::SECOND,
            duplicate_fraction: 0.05,
            ..SimulatorConfig::default()
        }
    }

    fn drain(reader: &mut SimulatorReader, batches: Option<usize>) -> Vec<String> {
        let mut rows = Vec::new();
        for _ in 0..batches.unwrap_or(usize::MAX) {
            let mut out = Vec::new();
            let poll = reader.poll(&mut out, 50);
            rows.extend(out.into_iter().map(|record| match record {
                Record::Row {
                    row, event_time, ..
                } => format!("{event_time} {row:?}"),
                other => format!("{other:?}"),
            }));
            if poll == Poll::Finished {
                break;
            }
        }
        rows
    }

    #[test]
    fn a_resumed_simulation_produces_exactly_what_would_have_come_next() {
        let schema = simulator_schema();
        let mut whole = SimulatorReader::new(config(), &schema, 0, 1).unwrap();
        let all = drain(&mut whole, None);
        let mut first = SimulatorReader::new(config(), &schema, 0, 1).unwrap();
        let head = drain(&mut first, Some(7));
        let position = SourceReader::position(&first).unwrap();
        let mut second = SimulatorReader::new(config(), &schema, 0, 1).unwrap();
        second.resume(&position).unwrap();
        let tail = drain(&mut second, None);
        assert!(!head.is_empty() && !tail.is_empty());
        assert_eq!([head, tail].concat(), all);
    }
}
