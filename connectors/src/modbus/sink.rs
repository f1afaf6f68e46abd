//! The `modbus` sink: each row a tag write (setpoints, valves, lights), encoded by the tag map
//! and read back to verify.
//!
//! A row names the tag and the engineering value; the sink turns it into registers (undoing
//! scale and offset, in the tag's type and byte order) and writes it. Writes to read-only areas
//! (discrete inputs, input registers), to tags the map does not have, or of values the type
//! cannot hold are refused with the reason. Every write is then read back: a PLC that clamps
//! or ignores a value is reported, not trusted. Writes run on the sink's own thread (it
//! [waits](SinkWriter::waits)) with the device's timeout, one at a time, in the order of the rows.
//!
//! Before a write, the tag's [`safety`](super::safety) limits are checked, interlocks read from
//! the device. With `shadow`, a write that passes is recorded and not made. Every attempt, made or
//! not, is a line of the audit log: when, which tag and value, the outcome (`written`, `shadow`,
//! `blocked`, `refused`, `failed`) with its reason, and the row that asked for it (for an
//! alarm's transition: which alarm, which key, what message).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::prelude::Slave;
use vibelux_operators::row::{Datum, Row};

use super::codec::{RawValue, decode_registers, encode_registers};
use super::poller::DeviceConfig;
use super::safety::WriteHistory;
use super::tags::{Register, Tag, ValueType};
use crate::json_row::encode_json_row;
use vibelux_interfaces::sink::{SinkError, SinkWriter, row_id};

#[derive(Debug, Clone)]
pub struct ModbusSinkConfig {
    pub device: DeviceConfig,
    /// The row's column naming the tag, and the one holding the value to write.
    pub tag_column: usize,
    pub value_column: usize,
    /// Check and record writes without making them.
    pub shadow: bool,
    /// The audit log (JSON lines, appended).
    pub audit: PathBuf,
}

pub struct ModbusWriter {
    config: ModbusSinkConfig,
    schema: SchemaRef,
    runtime: tokio::runtime::Runtime,
    context: Option<Context>,
    history: WriteHistory,
    audit: BufWriter<File>,
    /// In a checkpointed run: the ids of the rows the audit log shows written (or shadowed)
    /// after the checkpoint resumed from. Those rows come again after a crash, and a PLC
    /// write that was made must not be made twice.
    done_since_checkpoint: std::collections::HashMap<String, u32>,
}

/// How an attempted write ended.
#[derive(Clone, Copy)]
enum Outcome {
    Written,
    Shadow,
    /// Made before a crash, after the checkpoint resumed from: not made again.
    AlreadyWritten,
    /// A safety limit or interlock stopped it.
    Blocked,
    /// The map or the value made it impossible.
    Refused,
    /// The device did not take it.
    Failed,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Written => "written",
            Outcome::Shadow => "shadow",
            Outcome::AlreadyWritten => "already_written",
            Outcome::Blocked => "blocked",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

impl ModbusWriter {
    pub fn open(config: ModbusSinkConfig, schema: SchemaRef) -> Result<Self, SinkError> {
        let audit_error = |source| SinkError::Io {
            path: config.audit.display().to_string(),
            source,
        };
        if let Some(parent) = config.audit.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(audit_error)?;
        }
        let audit = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.audit)
            .map_err(audit_error)?;
        // What was written before a restart still counts against rates and minimum times.
        let history =
            WriteHistory::restore(&config.audit, &config.device.name).map_err(audit_error)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| SinkError::Broker {
                target: config.device.name.clone(),
                reason: error.to_string(),
            })?;
        Ok(ModbusWriter {
            config,
            schema,
            runtime,
            context: None,
            history,
            audit: BufWriter::new(audit),
            done_since_checkpoint: Default::default(),
        })
    }

    /// Opens the sink to continue from a checkpoint whose part is the audit log's length then:
    /// the writes recorded after it were made by the run that crashed, and are not made again.
    pub fn open_resuming(
        config: ModbusSinkConfig,
        schema: SchemaRef,
        part: Option<&[u8]>,
    ) -> Result<Self, SinkError> {
        let mut writer = Self::open(config, schema)?;
        let Some(part) = part else {
            return Ok(writer);
        };
        let length: u64 = vibelux_interfaces::checkpoint::decode("modbus audit position", part)
            .map_err(|reason| writer.refuse(reason))?;
        let done = writes_after(&writer.config.audit, length, &writer.config.device.name).map_err(
            |source| SinkError::Io {
                path: writer.config.audit.display().to_string(),
                source,
            },
        )?;
        if !done.is_empty() {
            tracing::info!(
                device = %writer.config.device.name,
                writes = done.values().sum::<u32>(),
                "writes made after the last checkpoint are not made again"
            );
        }
        writer.done_since_checkpoint = done;
        Ok(writer)
    }

    /// Syncs the audit log and records its length: every write before the cut is on record.
    fn checkpoint_part(&mut self) -> Result<Vec<u8>, SinkError> {
        let audit_error = |source| SinkError::Io {
            path: self.config.audit.display().to_string(),
            source,
        };
        self.audit.flush().map_err(audit_error)?;
        let file = self.audit.get_ref();
        file.sync_data().map_err(audit_error)?;
        let length = file.metadata().map_err(audit_error)?.len();
        Ok(vibelux_interfaces::checkpoint::encode(&length))
    }

    pub fn describe(&self) -> String {
        format!(
            "modbus {}:{} unit {}",
            self.config.device.host, self.config.device.port, self.config.device.unit_id
        )
    }

    fn refuse(&self, reason: String) -> SinkError {
        tracing::warn!(device = %self.config.device.name, %reason, "modbus write refused");
        SinkError::Broker {
            target: self.describe(),
            reason,
        }
    }

    /// Appends the attempt to the audit log; returns an error for anything not written.
    fn audit(
        &mut self,
        row: &Row,
        tag: &str,
        value: &str,
        outcome: Outcome,
        reason: Option<String>,
    ) -> Result<(), SinkError> {
        let mut requested = String::new();
        encode_json_row(&self.schema, row, None, &mut requested);
        let record = serde_json::json!({
            "at": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            "device": self.config.device.name,
            "tag": tag,
            "value": value,
            "outcome": outcome.name(),
            "reason": reason,
            "id": row_id(&self.config.device.name, row, true),
            "row": serde_json::from_str::<serde_json::Value>(&requested).unwrap_or_default(),
        });
        let written = writeln!(self.audit, "{record}").and_then(|()| self.audit.flush());
        if let Err(source) = written {
            return Err(SinkError::Io {
                path: self.config.audit.display().to_string(),
                source,
            });
        }
        match (outcome, reason) {
            (Outcome::Written | Outcome::Shadow | Outcome::AlreadyWritten, _) => Ok(()),
            (_, reason) => Err(self.refuse(format!(
                "tag `{tag}`: {} ({})",
                reason.unwrap_or_default(),
                outcome.name()
            ))),
        }
    }

    /// Writes the row's value to its tag; a delete (`insert = false`) is not a command.
    pub fn write(&mut self, row: &Row, insert: bool) -> Result<(), SinkError> {
        if !insert {
            return Ok(());
        }
        let shown = |datum: &Datum| match datum {
            Datum::Utf8(text) => text.to_string(),
            other => other.to_string(),
        };
        let name = shown(&row[self.config.tag_column]);
        let value_text = shown(&row[self.config.value_column]);
        let refused = |this: &mut Self, reason: String| {
            this.audit(row, &name, &value_text, Outcome::Refused, Some(reason))
        };
        if !self.done_since_checkpoint.is_empty() {
            let id = row_id(&self.config.device.name, row, true);
            if let Some(count) = self.done_since_checkpoint.get_mut(&id) {
                *count -= 1;
                if *count == 0 {
                    self.done_since_checkpoint.remove(&id);
                }
                let reason = "written before the engine restarted (see the audit log)";
                return self.audit(
                    row,
                    &name,
                    &value_text,
                    Outcome::AlreadyWritten,
                    Some(reason.to_string()),
                );
            }
        }
        let Datum::Utf8(_) = &row[self.config.tag_column] else {
            return refused(self, "the tag column holds no tag name".to_string());
        };
        let Some(tag) = self.find(&name) else {
            return refused(self, "no such tag in the tag map".to_string());
        };
        if !tag.register.is_writable() {
            return refused(self, format!("{} is read-only", tag.register.described()));
        }
        let value = match &row[self.config.value_column] {
            Datum::Float64(value) => RawValue::Float(*value),
            Datum::Int64(value) => RawValue::Float(*value as f64),
            Datum::Boolean(flag) => RawValue::Bool(*flag),
            Datum::Utf8(text) => RawValue::Text(text.to_string()),
            other => return refused(self, format!("cannot write {other:?}")),
        };
        if let Err(reason) = target(&tag, &value) {
            return refused(self, reason);
        }
        let now = Instant::now();
        if let Err(reason) = self.history.check(&tag, &value, now) {
            return self.audit(row, &name, &value_text, Outcome::Blocked, Some(reason));
        }
        for other in tag.limits.interlocks.clone() {
            let Some(interlock) = self.find(&other) else {
                continue; // the map was checked when loaded
            };
            let read =
                self.runtime
                    .block_on(read_tag(&mut self.context, &self.config.device, &interlock));
            let reason = match read {
                Ok(current) if current.number().is_some_and(|n| n != 0.0) => {
                    format!("interlock: `{other}` is on")
                }
                Ok(_) => continue,
                // An interlock that cannot be read blocks: the safe side.
                Err(problem) => format!("interlock `{other}` could not be read: {problem}"),
            };
            return self.audit(row, &name, &value_text, Outcome::Blocked, Some(reason));
        }
        if self.config.shadow {
            self.history.record(&tag, &value, now);
            return self.audit(row, &name, &value_text, Outcome::Shadow, None);
        }
        let written = self.runtime.block_on(write_and_verify(
            &mut self.context,
            &self.config.device,
            &tag,
            &value,
        ));
        match written {
            Ok(()) => {
                self.history.record(&tag, &value, now);
                tracing::debug!(device = %self.config.device.name, tag = %name, value = %value.text(), "modbus write verified");
                self.audit(row, &name, &value_text, Outcome::Written, None)
            }
            Err(reason) => self.audit(row, &name, &value_text, Outcome::Failed, Some(reason)),
        }
    }

    fn find(&self, name: &str) -> Option<Tag> {
        self.config
            .device
            .tags
            .tags
            .iter()
            .find(|tag| tag.name == name)
            .cloned()
    }

    pub fn finish(&mut self) -> Result<(), SinkError> {
        if let Some(mut context) = self.context.take() {
            use tokio_modbus::client::Client as _;
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_millis(200), context.disconnect()).await
            });
        }
        Ok(())
    }
}

impl SinkWriter for ModbusWriter {
    fn describe(&self) -> String {
        ModbusWriter::describe(self)
    }

    /// Waits on a PLC: every write is a request, verified by a read.
    fn waits(&self) -> bool {
        true
    }

    fn write(&mut self, row: &Row, insert: bool) -> Result<(), SinkError> {
        ModbusWriter::write(self, row, insert)
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        ModbusWriter::finish(self)
    }

    fn checkpoint(&mut self, _cut: u64) -> Result<Vec<u8>, SinkError> {
        self.checkpoint_part()
    }
}

/// The ids of the rows whose writes (or shadow writes) to `device` the audit log records after
/// byte `from`, with how many times each.
fn writes_after(
    path: &std::path::Path,
    from: u64,
    device: &str,
) -> std::io::Result<std::collections::HashMap<String, u32>> {
    use std::io::{BufRead, Seek, SeekFrom};
    let mut done = std::collections::HashMap::new();
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(done),
        Err(error) => return Err(error),
    };
    file.seek(SeekFrom::Start(from))?;
    for line in std::io::BufReader::new(file).lines() {
        // A line torn by the crash is not a record.
        let Ok(record) = serde_json::from_str::<serde_json::Value>(&line?) else {
            continue;
        };
        let made = matches!(record["outcome"].as_str(), Some("written" | "shadow"));
        if made
            && record["device"].as_str() == Some(device)
            && let Some(id) = record["id"].as_str()
        {
            *done.entry(id.to_string()).or_insert(0) += 1;
        }
    }
    Ok(done)
}

/// What the registers (or the coil) of `tag` must hold for the engineering `value`.
fn target(tag: &Tag, value: &RawValue) -> Result<Target, String> {
    if tag.register == Register::Coil {
        let on = value.number().ok_or("a coil takes true or false")? != 0.0;
        return Ok(Target::Coil(on));
    }
    let raw = match (value, tag.value_type) {
        (RawValue::Text(_), _) => value.clone(),
        (_, ValueType::Float32 | ValueType::Float64) => {
            RawValue::Float((value.number().unwrap_or(0.0) - tag.offset) / tag.scale)
        }
        _ => RawValue::Float(((value.number().unwrap_or(0.0) - tag.offset) / tag.scale).round()),
    };
    encode_registers(tag, &raw).map(Target::Words)
}

enum Target {
    Coil(bool),
    Words(Vec<u16>),
}

async fn write_and_verify(
    context: &mut Option<Context>,
    device: &DeviceConfig,
    tag: &Tag,
    value: &RawValue,
) -> Result<(), String> {
    let target = target(tag, value)?;
    let timeout = device.timeout;
    connect(context, device).await?;
    let client = context.as_mut().expect("connected");
    let address = tag.address;
    let exchange = async {
        match &target {
            Target::Coil(on) => {
                answer(client.write_single_coil(address, *on).await)?;
                let back = answer(client.read_coils(address, 1).await)?;
                if back.first() != Some(on) {
                    return Err(Failure::Refused(format!(
                        "read back {back:?} after writing {on}"
                    )));
                }
            }
            Target::Words(words) => {
                answer(if words.len() == 1 {
                    client.write_single_register(address, words[0]).await
                } else {
                    client.write_multiple_registers(address, words).await
                })?;
                let back = answer(
                    client
                        .read_holding_registers(address, words.len() as u16)
                        .await,
                )?;
                if back != *words {
                    return Err(Failure::Refused(format!(
                        "read back {back:?} after writing {words:?}"
                    )));
                }
            }
        }
        Ok(())
    };
    let outcome = match tokio::time::timeout(timeout, exchange).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Failure::Transport(format!("no answer within {timeout:?}"))),
    };
    match outcome {
        Ok(()) => Ok(()),
        Err(Failure::Refused(reason)) => Err(reason),
        Err(Failure::Transport(reason)) => {
            // As when polling: a late answer must not be taken for the next request's.
            *context = None;
            Err(reason)
        }
    }
}

/// Connects when there is no connection.
async fn connect(context: &mut Option<Context>, device: &DeviceConfig) -> Result<(), String> {
    let timeout = device.timeout;
    if context.is_none() {
        let address = tokio::net::lookup_host((device.host.as_str(), device.port))
            .await
            .ok()
            .and_then(|mut found| found.next())
            .ok_or_else(|| format!("cannot resolve {}:{}", device.host, device.port))?;
        let connecting = tokio_modbus::client::tcp::connect_slave(address, Slave(device.unit_id));
        *context = Some(
            tokio::time::timeout(timeout, connecting)
                .await
                .map_err(|_| format!("connecting to {address}: no answer within {timeout:?}"))?
                .map_err(|error| format!("connecting to {address}: {error}"))?,
        );
    }
    Ok(())
}

/// Reads a tag's current value from the device (an interlock, just before a write).
async fn read_tag(
    context: &mut Option<Context>,
    device: &DeviceConfig,
    tag: &Tag,
) -> Result<RawValue, String> {
    connect(context, device).await?;
    let client = context.as_mut().expect("connected");
    let (address, width) = (tag.address, tag.value_type.width());
    let exchange = async {
        Ok(match tag.register {
            Register::Coil => RawValue::Bool(answer(client.read_coils(address, 1).await)?[0]),
            Register::Discrete => {
                RawValue::Bool(answer(client.read_discrete_inputs(address, 1).await)?[0])
            }
            Register::Holding => decode_registers(
                tag,
                &answer(client.read_holding_registers(address, width).await)?,
            ),
            Register::Input => decode_registers(
                tag,
                &answer(client.read_input_registers(address, width).await)?,
            ),
        })
    };
    let outcome = match tokio::time::timeout(device.timeout, exchange).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Failure::Transport(format!(
            "no answer within {:?}",
            device.timeout
        ))),
    };
    outcome.map_err(|failure| match failure {
        Failure::Refused(reason) => reason,
        Failure::Transport(reason) => {
            *context = None;
            reason
        }
    })
}

/// Why a write did not take.
enum Failure {
    /// The device answered: an exception, or a read-back that differs.
    Refused(String),
    /// Timeout or transport error: the connection is dropped.
    Transport(String),
}

fn answer<T>(
    result: Result<Result<T, tokio_modbus::ExceptionCode>, tokio_modbus::Error>,
) -> Result<T, Failure> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(exception)) => Err(Failure::Refused(format!("exception {exception}"))),
        Err(error) => Err(Failure::Transport(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::modbus::plan::Limits;
    use crate::modbus::tags::TagMap;

    /// A sink for a device nobody listens on: any write it attempts fails.
    fn config(audit: PathBuf) -> ModbusSinkConfig {
        let tags = TagMap::parse(
            "[[tag]]\nname = \"setpoint\"\nregister = \"holding\"\naddress = 1\ntype = \"int16\"\nmin = 0\nmax = 100\n",
            Duration::from_secs(1),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        ModbusSinkConfig {
            device: DeviceConfig {
                name: "room1".into(),
                host: "127.0.0.1".into(),
                port,
                unit_id: 1,
                tags: Arc::new(tags),
                tags_file: None,
                limits: Limits {
                    max_registers: 125,
                    max_bits: 2000,
                    gap_fill: 0,
                    per_tag: false,
                },
                timeout: Duration::from_millis(200),
                retries: 0,
                pause: Duration::ZERO,
                close_after_poll: false,
                simulate: false,
            },
            tag_column: 0,
            value_column: 1,
            shadow: false,
            audit,
        }
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("tag", DataType::Utf8, false),
            Field::new("value", DataType::Float64, false),
        ]))
    }

    fn row(value: f64) -> Row {
        vec![Datum::Utf8("setpoint".into()), Datum::Float64(value)]
    }

    fn outcomes(path: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| {
                let record: serde_json::Value = serde_json::from_str(line).unwrap();
                record["outcome"].as_str().unwrap().to_string()
            })
            .collect()
    }

    #[test]
    fn writes_the_audit_log_shows_made_after_the_checkpoint_are_not_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.jsonl");
        // The run before the crash: a checkpoint, then a write it made (the line its audit
        // would have), then the crash.
        let mut before = ModbusWriter::open(config(audit.clone()), schema()).unwrap();
        let part = before.checkpoint_part().unwrap();
        let made = serde_json::json!({
            "device": "room1", "tag": "setpoint", "value": "21.5", "outcome": "written",
            "id": row_id("room1", &row(21.5), true),
        });
        writeln!(before.audit, "{made}").unwrap();
        before.audit.flush().unwrap();
        drop(before);

        // The restarted run gets the same row again: it is not written (the device is not
        // even reached, or it would fail), and the log says so.
        let mut after =
            ModbusWriter::open_resuming(config(audit.clone()), schema(), Some(&part)).unwrap();
        after.write(&row(21.5), true).unwrap();
        assert_eq!(outcomes(&audit), vec!["written", "already_written"]);
        // A second request for the same value is a new command: it is attempted (and fails,
        // as nothing listens).
        assert!(after.write(&row(21.5), true).is_err());
        assert_eq!(outcomes(&audit)[2], "failed");
    }
}
