//! The `modbus` source: one device polled on a thread of its own, its readings handed to one
//! worker as rows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use datafusion::arrow::datatypes::{DataType as ArrowType, TimeUnit};
use vibelux_operators::row::{Datum, Row};

use super::poller::{DeviceConfig, Health, PollResult, Poller, Reading};
use crate::background::BackgroundThread;
use crate::payload::RowLayout;
use crate::source::{Poll, Record, SourceMetrics, SourceReader, Waker};

/// The columns a Modbus source can declare (any subset, any order), with their types.
pub const COLUMNS: &[(&str, ArrowType)] = &[
    ("device", ArrowType::Utf8),
    ("tag", ArrowType::Utf8),
    ("ts", ArrowType::Timestamp(TimeUnit::Nanosecond, None)),
    ("value", ArrowType::Float64),
    ("raw", ArrowType::Utf8),
    ("unit", ArrowType::Utf8),
    ("quality", ArrowType::Utf8),
    ("error", ArrowType::Utf8),
];

/// The columns of `<source>_health`: one row per device per poll.
pub fn health_schema() -> datafusion::arrow::datatypes::SchemaRef {
    use datafusion::arrow::datatypes::{Field, Schema};
    let timestamp = ArrowType::Timestamp(TimeUnit::Nanosecond, None);
    Arc::new(Schema::new(vec![
        Field::new("device", ArrowType::Utf8, true),
        Field::new("ts", timestamp.clone(), true),
        Field::new("connected", ArrowType::Boolean, true),
        Field::new("last_success", timestamp, true),
        Field::new("failures", ArrowType::Int64, true),
        Field::new("errors_total", ArrowType::Int64, true),
        Field::new("error", ArrowType::Utf8, true),
    ]))
}

/// Polls waiting for the worker before the poller waits.
const QUEUE: usize = 1024;

/// Starts polling the device; returns one reader per worker (the device's rows go to one).
///
/// Only the process that runs the owning worker (`local`: this process's workers) polls: in a
/// cluster every process starts the source, and a PLC must not be polled once per process.
pub fn start(
    name: &str,
    config: DeviceConfig,
    layout: RowLayout,
    peers: usize,
    local: std::ops::Range<usize>,
    metrics: Arc<SourceMetrics>,
) -> std::io::Result<Vec<ModbusReader>> {
    let peers = peers.max(1);
    let owner = {
        use std::hash::{Hash, Hasher};
        // Fixed keys: every process of a cluster finds the same owner.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        config.name.hash(&mut hasher);
        (hasher.finish() % peers as u64) as usize
    };
    let (sender, receiver) = std::sync::mpsc::sync_channel::<PollResult>(QUEUE);
    let waker: Arc<OnceLock<Waker>> = Arc::default();
    let guard = if local.contains(&owner) {
        // Only a polling process reports a connection (or its absence) to the device.
        metrics.networked.store(true, Ordering::Relaxed);
        let waker = waker.clone();
        let config = config.clone();
        Some(BackgroundThread::spawn(
            format!("modbus-{name}"),
            move |stop| poll_device(config, sender, waker, stop, metrics),
        )?)
    } else {
        None
    };
    let columns: Vec<Option<usize>> = COLUMNS
        .iter()
        .map(|(column, _)| layout.column_index(column))
        .collect();
    let mut receiver = Some(receiver);
    Ok((0..peers)
        .map(|worker| ModbusReader {
            device: Arc::new(config.clone()),
            layout: layout.clone(),
            columns: columns.clone(),
            queue: if worker == owner {
                receiver.take()
            } else {
                None
            },
            waker: waker.clone(),
            _guard: guard.clone(),
        })
        .collect())
}

fn poll_device(
    config: DeviceConfig,
    sender: SyncSender<PollResult>,
    waker: Arc<OnceLock<Waker>>,
    stop: Arc<AtomicBool>,
    metrics: Arc<SourceMetrics>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(device = %config.name, %error, "cannot start the Modbus poller");
            return;
        }
    };
    let mut config = config;
    if config.simulate {
        // The simulated PLC runs on this thread's runtime and is polled over real Modbus TCP.
        let started = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
            let address = listener.local_addr()?;
            let room = super::plc_simulator::GrowRoom::new(config.tags.clone());
            tokio::spawn(super::plc_simulator::serve(room, listener, config.unit_id));
            Ok::<_, std::io::Error>(address)
        });
        match started {
            Ok(address) => {
                tracing::info!(device = %config.name, %address, "simulated PLC started");
                config.host = address.ip().to_string();
                config.port = address.port();
            }
            Err(error) => {
                tracing::error!(device = %config.name, %error, "cannot start the simulated PLC");
                return;
            }
        }
    }
    let device = config.name.clone();
    let stopping = stop.clone();
    let mut poller = Poller::new(config, move |result: PollResult| {
        metrics
            .connected
            .store(result.health.connected, Ordering::Relaxed);
        if !result.health.connected {
            metrics.connection_errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut batch = result;
        loop {
            match sender.try_send(batch) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    // The dataflow is behind: the next poll waits (the device keeps its state).
                    batch = back;
                    if stopping.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
        if let Some(waker) = waker.get() {
            waker();
        }
    });
    runtime.block_on(poller.run(|| stop.load(Ordering::Relaxed)));
    tracing::debug!(%device, "modbus poller stopped");
}

/// One worker's share of a Modbus source: the device's rows, or nothing.
pub struct ModbusReader {
    device: Arc<DeviceConfig>,
    layout: RowLayout,
    columns: Vec<Option<usize>>,
    queue: Option<Receiver<PollResult>>,
    waker: Arc<OnceLock<Waker>>,
    /// The poller, in the process that polls.
    _guard: Option<Arc<BackgroundThread>>,
}

impl ModbusReader {
    fn row(&self, reading: &Reading) -> Row {
        let tag = &self.device.tags.tags[reading.tag];
        let mut row = vec![Datum::Null; self.layout.schema.fields().len()];
        let text = |text: &str| Datum::Utf8(text.into());
        for (index, column) in self.columns.iter().enumerate() {
            let Some(column) = *column else { continue };
            row[column] = match COLUMNS[index].0 {
                "device" => text(&self.device.name),
                "tag" => text(&tag.name),
                "ts" => Datum::Timestamp(reading.polled_at),
                "value" => reading
                    .raw
                    .as_ref()
                    .and_then(|raw| raw.number())
                    .map_or(Datum::Null, |raw| Datum::Float64(tag.engineering(raw))),
                "raw" => reading
                    .raw
                    .as_ref()
                    .map_or(Datum::Null, |raw| text(&raw.text())),
                "unit" => tag.unit.as_deref().map_or(Datum::Null, text),
                "quality" => text(reading.quality.name()),
                "error" => reading.error.as_deref().map_or(Datum::Null, text),
                _ => Datum::Null,
            };
        }
        row
    }
}

impl ModbusReader {
    fn health_row(&self, health: &Health) -> Row {
        vec![
            Datum::Utf8(self.device.name.as_str().into()),
            Datum::Timestamp(health.polled_at),
            Datum::Boolean(health.connected),
            health.last_success.map_or(Datum::Null, Datum::Timestamp),
            Datum::Int64(health.failures as i64),
            Datum::Int64(health.errors_total as i64),
            health
                .error
                .as_deref()
                .map_or(Datum::Null, |error| Datum::Utf8(error.into())),
        ]
    }
}

impl SourceReader for ModbusReader {
    /// A poller reads a device's present values and has no history to go back to: a resumed
    /// poller polls again. What it polled after the last checkpoint, like the values of the
    /// time the engine was down, is not read again (see docs/connectors.md).
    fn position(&self) -> Option<Vec<u8>> {
        Some(Vec::new())
    }

    fn poll(&mut self, out: &mut Vec<Record>, max_records: usize) -> Poll {
        let Some(queue) = &self.queue else {
            return Poll::Idle(Duration::from_secs(1));
        };
        let mut taken = 0;
        while taken < max_records {
            let result = match queue.try_recv() {
                Ok(result) => result,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Poll::Idle(Duration::from_secs(1)),
            };
            out.push(Record::Status {
                row: self.health_row(&result.health),
            });
            for reading in &result.readings {
                taken += 1;
                out.push(match self.layout.finish(self.row(reading)) {
                    Ok((row, event_time)) => Record::Row {
                        row,
                        event_time,
                        partition: 0,
                    },
                    Err(reason) => Record::Invalid {
                        reason,
                        raw: reading
                            .raw
                            .as_ref()
                            .map(|raw| raw.text())
                            .unwrap_or_default(),
                        origin: format!(
                            "modbus device {} tag {}",
                            self.device.name, self.device.tags.tags[reading.tag].name
                        ),
                    },
                });
            }
        }
        if taken >= max_records {
            Poll::Ready
        } else {
            Poll::Idle(Duration::from_millis(100))
        }
    }

    fn processing_time(&self) -> Option<i64> {
        Some(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_nanos() as i64)
                .unwrap_or(0),
        )
    }

    fn set_waker(&mut self, waker: Waker) {
        if self.queue.is_some() {
            let _ = self.waker.set(waker);
        }
    }
}
