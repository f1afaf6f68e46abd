//! The `modbus` sink: each row a tag write (setpoints, valves, lights), encoded by the tag map
//! and read back to verify.
//!
//! A row names the tag and the engineering value; the sink turns it into registers (undoing
//! scale and offset, in the tag's type and byte order) and writes it. Writes to read-only areas
//! (discrete inputs, input registers), to tags the map does not have, or of values the type
//! cannot hold are refused with the reason. Every write is then read back: a PLC that clamps
//! or ignores a value is reported, not trusted. Writes run on the sink's worker with the
//! device's timeout, one at a time, in the order of the rows.

use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::prelude::Slave;
use vibelux_operators::row::{Datum, Row};

use super::codec::{RawValue, encode_registers};
use super::poller::DeviceConfig;
use super::tags::{Register, Tag, ValueType};
use crate::file_sink::SinkError;

#[derive(Debug, Clone)]
pub struct ModbusSinkConfig {
    pub device: DeviceConfig,
    /// The row's column naming the tag, and the one holding the value to write.
    pub tag_column: usize,
    pub value_column: usize,
}

pub struct ModbusWriter {
    config: ModbusSinkConfig,
    runtime: tokio::runtime::Runtime,
    context: Option<Context>,
}

impl ModbusWriter {
    pub fn open(config: ModbusSinkConfig, _schema: SchemaRef) -> Result<Self, SinkError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| SinkError::Broker {
                target: config.device.name.clone(),
                reason: error.to_string(),
            })?;
        Ok(ModbusWriter {
            config,
            runtime,
            context: None,
        })
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

    /// Writes the row's value to its tag; a delete (`insert = false`) is not a command.
    pub fn write(&mut self, row: &Row, insert: bool) -> Result<(), SinkError> {
        if !insert {
            return Ok(());
        }
        let name = match &row[self.config.tag_column] {
            Datum::Utf8(name) => name.to_string(),
            other => {
                return Err(self.refuse(format!("the tag column holds {other:?}, not a tag name")));
            }
        };
        let Some(tag) = self
            .config
            .device
            .tags
            .tags
            .iter()
            .find(|tag| tag.name == name)
            .cloned()
        else {
            return Err(self.refuse(format!("no tag `{name}` in the tag map")));
        };
        if !tag.register.is_writable() {
            return Err(self.refuse(format!(
                "tag `{name}` is {}: read-only",
                tag.register.described()
            )));
        }
        let value = match &row[self.config.value_column] {
            Datum::Float64(value) => RawValue::Float(*value),
            Datum::Int64(value) => RawValue::Float(*value as f64),
            Datum::Boolean(flag) => RawValue::Bool(*flag),
            Datum::Utf8(text) => RawValue::Text(text.to_string()),
            other => {
                return Err(self.refuse(format!("tag `{name}`: cannot write {other:?}")));
            }
        };
        let written = self.runtime.block_on(write_and_verify(
            &mut self.context,
            &self.config.device,
            &tag,
            &value,
        ));
        match written {
            Ok(()) => {
                tracing::debug!(device = %self.config.device.name, tag = %name, value = %value.text(), "modbus write verified");
                Ok(())
            }
            Err(reason) => Err(self.refuse(format!("tag `{name}`: {reason}"))),
        }
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
