//! The `simulator` source: an embedded facility of rooms, zones and sensors.
//!
//! It exists so a pipeline can be developed, demonstrated and tested without hardware. Rooms follow
//! light schedules (even rooms vegetative 18/6 with lights 06:00–24:00, odd rooms flowering 12/12
//! with lights 08:00–20:00, UTC); temperature, humidity, CO2 and PPFD follow the lights with noise.
//! Faults (HVAC drift, a stuck sensor, a spike, a dropout) can be injected, and their ground truth
//! written out, so anomaly detection can be scored. Every sensor draws from its own seeded random
//! stream, so the readings do not depend on how many workers share the sensors.

pub mod connector;
pub mod options;
mod resume;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use vibelux_operators::row::{Datum, Row, format_timestamp};

use crate::source::{Poll, Record, SourceReader};

const SECOND: i64 = 1_000_000_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// How fast simulated time runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// Event time is the wall clock.
    Realtime,
    /// As fast as possible: a replay of simulated history.
    Max,
    /// Simulated time runs this many times faster than the wall clock.
    Factor(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    HvacDrift,
    StuckSensor,
    Spike,
    Dropout,
}

impl FaultKind {
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim() {
            "hvac_drift" => Some(FaultKind::HvacDrift),
            "stuck" | "stuck_sensor" => Some(FaultKind::StuckSensor),
            "spike" => Some(FaultKind::Spike),
            "dropout" => Some(FaultKind::Dropout),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FaultKind::HvacDrift => "hvac_drift",
            FaultKind::StuckSensor => "stuck",
            FaultKind::Spike => "spike",
            FaultKind::Dropout => "dropout",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    pub rooms: usize,
    pub zones_per_room: usize,
    pub sensors_per_zone: usize,
    pub seed: u64,
    /// Time between two readings of one sensor.
    pub interval_nanos: i64,
    pub speed: Speed,
    /// First reading time; `None` is now for live speeds and 2026-06-01T00:00:00 for `Max`.
    pub start_nanos: Option<i64>,
    /// Simulated time to run for; `None` runs until stopped.
    pub duration_nanos: Option<i64>,
    pub faults: Vec<FaultKind>,
    pub faults_path: Option<PathBuf>,
    /// Readings arrive up to this much after their event time, in random order.
    pub disorder_nanos: i64,
    /// Fraction of readings delivered twice.
    pub duplicate_fraction: f64,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            rooms: 4,
            zones_per_room: 5,
            sensors_per_zone: 10,
            seed: 42,
            interval_nanos: 10 * SECOND,
            speed: Speed::Realtime,
            start_nanos: None,
            duration_nanos: None,
            faults: Vec::new(),
            faults_path: None,
            disorder_nanos: 0,
            duplicate_fraction: 0.0,
        }
    }
}

/// The columns the simulator produces; a source may declare any subset, in any order.
pub fn simulator_schema() -> SchemaRef {
    let timestamp = DataType::Timestamp(TimeUnit::Nanosecond, None);
    Arc::new(Schema::new(vec![
        Field::new("sensor_id", DataType::Utf8, false),
        Field::new("room", DataType::Utf8, false),
        Field::new("zone", DataType::Utf8, false),
        Field::new("ts", timestamp, false),
        Field::new("temp_c", DataType::Float64, true),
        Field::new("rh", DataType::Float64, true),
        Field::new("co2_ppm", DataType::Float64, true),
        Field::new("ppfd", DataType::Float64, true),
    ]))
}

/// The unit of a simulated measurement column, recorded in the schema unless declared.
pub fn simulated_unit(column: &str) -> Option<&'static str> {
    match column {
        "temp_c" => Some("°C"),
        "rh" => Some("%"),
        "co2_ppm" => Some("ppm"),
        "ppfd" => Some("µmol/m²/s"),
        _ => None,
    }
}

/// A fault injected at a time, with its ground truth.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    /// Room index for HVAC drift, sensor index otherwise.
    pub target: usize,
    pub target_name: String,
    pub start: i64,
    pub end: i64,
}

impl SimulatorConfig {
    pub fn sensor_count(&self) -> usize {
        self.rooms * self.zones_per_room * self.sensors_per_zone
    }

    pub fn resolved_start(&self) -> i64 {
        self.start_nanos.unwrap_or_else(|| match self.speed {
            Speed::Max => 1_780_272_000 * SECOND,
            _ => {
                let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
                now - now.rem_euclid(self.interval_nanos)
            }
        })
    }

    /// The faults of this run: the same for every worker, decided by the seed alone.
    pub fn fault_plan(&self, start: i64) -> Vec<Fault> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0xFA017);
        let span = self
            .duration_nanos
            .unwrap_or(2 * HOUR)
            .max(self.interval_nanos * 10);
        self.faults
            .iter()
            .map(|&kind| {
                let fault_start = start + rng.random_range(span / 10..span / 2);
                let length = match kind {
                    FaultKind::Spike => self.interval_nanos,
                    _ => rng
                        .random_range(span / 10..span / 3)
                        .max(self.interval_nanos),
                };
                let (target, target_name) = match kind {
                    FaultKind::HvacDrift => {
                        let room = rng.random_range(0..self.rooms);
                        (room, room_name(room))
                    }
                    _ => {
                        let sensor = rng.random_range(0..self.sensor_count());
                        (sensor, self.sensor_identity(sensor).0)
                    }
                };
                Fault {
                    kind,
                    target,
                    target_name,
                    start: fault_start,
                    end: fault_start + length,
                }
            })
            .collect()
    }

    /// Writes the fault plan as JSON lines: what was injected where, and when.
    pub fn write_fault_ground_truth(&self, start: i64) -> std::io::Result<()> {
        let Some(path) = &self.faults_path else {
            return Ok(());
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut text = String::new();
        for fault in self.fault_plan(start) {
            let line = serde_json::json!({
                "fault": fault.kind.name(),
                "target": fault.target_name,
                "start": format_timestamp(fault.start),
                "end": format_timestamp(fault.end),
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
        std::fs::write(path, text)
    }

    /// (sensor id, room, zone) names of a sensor index.
    fn sensor_identity(&self, sensor: usize) -> (String, String, String) {
        let per_room = self.zones_per_room * self.sensors_per_zone;
        let room = sensor / per_room;
        let zone = (sensor % per_room) / self.sensors_per_zone;
        let position = sensor % self.sensors_per_zone;
        let room_name = room_name(room);
        let zone_name = format!("{room_name}-z{:02}", zone + 1);
        (
            format!("{zone_name}-s{:02}", position + 1),
            room_name,
            zone_name,
        )
    }
}

fn room_name(room: usize) -> String {
    format!("r{:02}", room + 1)
}

/// Where each declared column comes from.
#[derive(Debug, Clone, Copy)]
enum Column {
    SensorId,
    Room,
    Zone,
    Ts,
    Temp,
    Humidity,
    Co2,
    Ppfd,
}

/// Maps declared column names to simulator fields, or says which name it cannot produce.
fn map_columns(schema: &Schema) -> Result<Vec<Column>, String> {
    schema
        .fields()
        .iter()
        .map(|field| {
            Ok(match field.name().to_ascii_lowercase().as_str() {
                "sensor_id" => Column::SensorId,
                "room" => Column::Room,
                "zone" => Column::Zone,
                "ts" => Column::Ts,
                "temp_c" => Column::Temp,
                "rh" => Column::Humidity,
                "co2_ppm" => Column::Co2,
                "ppfd" => Column::Ppfd,
                other => {
                    return Err(format!(
                        "the simulator does not produce a column `{other}`; it produces sensor_id, room, zone, ts, temp_c, rh, co2_ppm, ppfd"
                    ));
                }
            })
        })
        .collect()
}

/// Checks that a declared schema can be filled by the simulator.
pub fn check_columns(schema: &Schema) -> Result<(), String> {
    let simulated = simulator_schema();
    for field in schema.fields() {
        if let Ok(expected) = simulated.field_with_name(&field.name().to_ascii_lowercase())
            && expected.data_type() != field.data_type()
        {
            return Err(format!(
                "column `{}` is produced as {}, declared as {}",
                field.name(),
                expected.data_type(),
                field.data_type()
            ));
        }
    }
    map_columns(schema).map(|_| ())
}

pub(super) struct Sensor {
    index: usize,
    id: Arc<str>,
    room: Arc<str>,
    zone: Arc<str>,
    room_index: usize,
    zone_offset: f64,
    phase: i64,
    pub(super) rng: ChaCha8Rng,
    pub(super) last: Option<[f64; 4]>,
    /// The first tick this sensor reads at: later than the reader's clock when it was taken
    /// over from a worker that was ahead (a checkpoint of another worker count).
    pub(super) from_tick: i64,
}

/// A reading waiting for its (possibly delayed) arrival.
pub(super) type Pending = Reverse<(i64, u64, Vec<Datum>, i64)>;

pub struct SimulatorReader {
    pub(super) config: SimulatorConfig,
    columns: Vec<Column>,
    pub(super) sensors: Vec<Sensor>,
    faults: Vec<Fault>,
    pub(super) start: i64,
    pub(super) next_tick: i64,
    pub(super) pending: BinaryHeap<Pending>,
    pub(super) sequence: u64,
    /// Simulated time at `started_at`, for live speeds.
    pub(super) clock_origin: i64,
    pub(super) started_at: Instant,
    noise: Normal<f64>,
}

impl SimulatorReader {
    pub fn new(
        config: SimulatorConfig,
        schema: &Schema,
        worker: usize,
        peers: usize,
    ) -> Result<Self, String> {
        let columns = map_columns(schema)?;
        let start = config.resolved_start();
        let sensors = (0..config.sensor_count())
            .filter(|sensor| sensor % peers == worker)
            .map(|index| {
                let (id, room, zone) = config.sensor_identity(index);
                let mut rng = ChaCha8Rng::seed_from_u64(
                    config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index as u64,
                );
                let zone_index = index / config.sensors_per_zone;
                let zone_offset = ((zone_index * 37 % 11) as f64 - 5.0) / 10.0;
                let phase = rng.random_range(0..config.interval_nanos.max(1));
                Sensor {
                    index,
                    id: id.into(),
                    room: room.into(),
                    zone: zone.into(),
                    room_index: index / (config.zones_per_room * config.sensors_per_zone),
                    zone_offset,
                    phase,
                    rng,
                    last: None,
                    from_tick: i64::MIN,
                }
            })
            .collect();
        let faults = config.fault_plan(start);
        Ok(SimulatorReader {
            config,
            columns,
            sensors,
            faults,
            start,
            next_tick: start,
            pending: BinaryHeap::new(),
            sequence: 0,
            clock_origin: start,
            started_at: Instant::now(),
            noise: Normal::new(0.0, 1.0).expect("unit normal"),
        })
    }

    /// Simulated time now, for live speeds.
    pub(super) fn simulated_now(&self) -> i64 {
        let elapsed = self.started_at.elapsed().as_nanos() as f64;
        match self.config.speed {
            Speed::Max => i64::MAX,
            Speed::Realtime => self.clock_origin + elapsed as i64,
            Speed::Factor(factor) => self.clock_origin + (elapsed * factor) as i64,
        }
    }

    fn end(&self) -> i64 {
        self.config
            .duration_nanos
            .map_or(i64::MAX, |duration| self.start + duration)
    }

    fn generate_tick(&mut self, tick: i64) {
        let faults = &self.faults;
        for sensor in &mut self.sensors {
            if tick < sensor.from_tick {
                continue;
            }
            let ts = tick + sensor.phase;
            let active = |kind: FaultKind, target: usize| {
                faults
                    .iter()
                    .find(|f| f.kind == kind && f.target == target && f.start <= ts && ts < f.end)
            };
            if active(FaultKind::Dropout, sensor.index).is_some() {
                continue;
            }
            let light = light_level(sensor.room_index, ts);
            let lights_on = is_light_on(sensor.room_index, ts);
            let mut gauss = |scale: f64| self.noise.sample(&mut sensor.rng) * scale;
            let mut values = [
                20.5 + 5.5 * light + sensor.zone_offset + gauss(0.15),
                (70.0 - 12.0 * light + gauss(1.0)).clamp(0.0, 100.0),
                450.0 + 600.0 * light + gauss(20.0),
                if lights_on {
                    (if sensor.room_index.is_multiple_of(2) {
                        600.0
                    } else {
                        900.0
                    }) * light
                        * (1.0 + gauss(0.02))
                } else {
                    0.0
                },
            ];
            if let Some(drift) = active(FaultKind::HvacDrift, sensor.room_index) {
                values[0] += 2.0 * (ts - drift.start) as f64 / HOUR as f64;
            }
            if active(FaultKind::Spike, sensor.index).is_some() {
                values[0] += 15.0;
                values[2] += 1500.0;
            }
            match (active(FaultKind::StuckSensor, sensor.index), sensor.last) {
                (Some(_), Some(last)) => values = last,
                _ => sensor.last = Some(values),
            }
            let row: Row = self
                .columns
                .iter()
                .map(|column| match column {
                    Column::SensorId => Datum::Utf8(sensor.id.clone()),
                    Column::Room => Datum::Utf8(sensor.room.clone()),
                    Column::Zone => Datum::Utf8(sensor.zone.clone()),
                    Column::Ts => Datum::Timestamp(ts),
                    Column::Temp => Datum::Float64(round(values[0], 2)),
                    Column::Humidity => Datum::Float64(round(values[1], 1)),
                    Column::Co2 => Datum::Float64(round(values[2], 0)),
                    Column::Ppfd => Datum::Float64(round(values[3], 0)),
                })
                .collect();
            let delay = if self.config.disorder_nanos > 0 {
                sensor.rng.random_range(0..=self.config.disorder_nanos)
            } else {
                0
            };
            let duplicate = self.config.duplicate_fraction > 0.0
                && sensor
                    .rng
                    .random_bool(self.config.duplicate_fraction.min(1.0));
            self.sequence += 1;
            if duplicate {
                self.pending
                    .push(Reverse((ts + delay + 1, self.sequence, row.clone(), ts)));
            }
            self.pending
                .push(Reverse((ts + delay, self.sequence, row, ts)));
        }
    }
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// Hours (UTC) when a room's lights switch on and off.
fn light_schedule(room: usize) -> (i64, i64) {
    if room.is_multiple_of(2) {
        (6, 24)
    } else {
        (8, 20)
    }
}

fn is_light_on(room: usize, ts: i64) -> bool {
    let (on, off) = light_schedule(room);
    let time_of_day = ts.rem_euclid(DAY);
    time_of_day >= on * HOUR && time_of_day < off * HOUR
}

/// 0 in the dark, 1 in full light, with a 15-minute settling after each switch.
fn light_level(room: usize, ts: i64) -> f64 {
    let (on, off) = light_schedule(room);
    let time_of_day = ts.rem_euclid(DAY);
    let minutes = |since: i64| (time_of_day - since).rem_euclid(DAY) as f64 / MINUTE as f64;
    if is_light_on(room, ts) {
        1.0 - (-minutes(on * HOUR) / 15.0).exp()
    } else {
        (-minutes(off * HOUR) / 15.0).exp()
    }
}

impl SimulatorReader {
    /// Emits pending readings that have arrived by `limit` (all of them once the run is over).
    fn deliver_due(&mut self, limit: i64, out: &mut Vec<Record>) {
        let finished = self.next_tick >= self.end();
        while let Some(Reverse((arrival, ..))) = self.pending.peek() {
            if *arrival > limit && !finished {
                break;
            }
            let Reverse((_, _, row, event_time)) = self.pending.pop().expect("peeked");
            out.push(Record::Row {
                row,
                event_time,
                partition: 0,
            });
        }
    }
}

impl SourceReader for SimulatorReader {
    fn poll(&mut self, out: &mut Vec<Record>, max_records: usize) -> Poll {
        let now = self.simulated_now().min(self.end());
        let limit = out.len() + max_records;
        while out.len() < limit && self.next_tick <= now && self.next_tick < self.end() {
            let tick = self.next_tick;
            self.generate_tick(tick);
            self.next_tick += self.config.interval_nanos;
            // Later ticks only produce readings arriving after the next tick starts.
            self.deliver_due(self.next_tick.min(now), out);
        }
        self.deliver_due(self.next_tick.min(now), out);
        if self.next_tick >= self.end() && self.pending.is_empty() {
            return Poll::Finished;
        }
        if self.next_tick <= now {
            return Poll::Ready;
        }
        let until_next_tick = (self.next_tick - now) as f64;
        let wait = match self.config.speed {
            Speed::Factor(factor) => until_next_tick / factor,
            _ => until_next_tick,
        };
        Poll::Idle(Duration::from_nanos(wait as u64).min(Duration::from_millis(200)))
    }

    fn processing_time(&self) -> Option<i64> {
        match self.config.speed {
            Speed::Max => None,
            _ => Some(self.simulated_now()),
        }
    }

    fn position(&self) -> Option<Vec<u8>> {
        Some(self.checkpoint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SimulatorConfig {
        SimulatorConfig {
            rooms: 2,
            zones_per_room: 2,
            sensors_per_zone: 3,
            speed: Speed::Max,
            duration_nanos: Some(HOUR),
            interval_nanos: MINUTE,
            ..SimulatorConfig::default()
        }
    }

    fn run(config: SimulatorConfig, worker: usize, peers: usize) -> Vec<(Row, i64)> {
        let mut reader = SimulatorReader::new(config, &simulator_schema(), worker, peers).unwrap();
        let mut out = Vec::new();
        while reader.poll(&mut out, 100) != Poll::Finished {}
        out.into_iter()
            .map(|record| match record {
                Record::Row {
                    row, event_time, ..
                } => (row, event_time),
                Record::Invalid { reason, .. } => panic!("{reason}"),
                other => panic!("the simulator gives rows only, not {other:?}"),
            })
            .collect()
    }

    #[test]
    fn readings_do_not_depend_on_how_sensors_are_split_across_workers() {
        let mut alone = run(config(), 0, 1);
        let mut split = run(config(), 0, 2);
        split.extend(run(config(), 1, 2));
        alone.sort();
        split.sort();
        assert_eq!(alone.len(), 12 * 60);
        assert_eq!(alone, split);
    }

    #[test]
    fn disorder_stays_within_its_bound_and_duplicates_appear() {
        let mut disordered = config();
        disordered.disorder_nanos = 30 * SECOND;
        disordered.duplicate_fraction = 0.1;
        let readings = run(disordered, 0, 1);
        assert!(readings.len() > 12 * 60);
        let mut max_seen = i64::MIN;
        let mut out_of_order = 0;
        for (_, ts) in &readings {
            if *ts < max_seen {
                out_of_order += 1;
                assert!(max_seen - ts <= 30 * SECOND + MINUTE);
            }
            max_seen = max_seen.max(*ts);
        }
        assert!(out_of_order > 0);
    }

    #[test]
    fn lights_follow_the_room_schedule() {
        assert!(is_light_on(0, 7 * HOUR) && !is_light_on(0, 3 * HOUR));
        assert!(!is_light_on(1, 21 * HOUR) && is_light_on(1, 12 * HOUR));
        assert!(light_level(0, 12 * HOUR) > 0.99);
    }

    #[test]
    fn a_dropout_removes_readings_and_is_recorded() {
        let mut faulty = config();
        faulty.faults = vec![FaultKind::Dropout];
        let plan = faulty.fault_plan(faulty.resolved_start());
        assert_eq!(plan.len(), 1);
        assert!(run(faulty, 0, 1).len() < 12 * 60);
    }

    #[test]
    fn an_undeclared_column_name_is_refused_with_the_list_of_columns() {
        let schema = Schema::new(vec![Field::new("soil_moisture", DataType::Float64, true)]);
        assert!(
            check_columns(&schema)
                .unwrap_err()
                .contains("soil_moisture")
        );
    }
}
