//! Where a sink writes: each sink connector's configuration, and opening its writer.

use std::path::PathBuf;

use datafusion::arrow::datatypes::SchemaRef;
use vibelux_interfaces::sink::{SinkError, SinkWriter};

use crate::file_sink::RowWriter;
use crate::file_source::FileFormat;
use crate::kafka::sink::{KafkaProducer, KafkaSinkConfig};
use crate::modbus::sink::ModbusWriter;
use crate::mqtt::sink::{MqttPublisher, MqttSinkConfig};
use crate::parquet_sink::{ParquetSinkConfig, ParquetWriter};
use crate::webhook::WebhookSender;

/// Where a sink writes.
#[derive(Debug, Clone)]
pub enum SinkTarget {
    File { path: PathBuf, format: FileFormat },
    Stdout,
    Parquet(ParquetSinkConfig),
    Mqtt(MqttSinkConfig),
    Kafka(KafkaSinkConfig),
    Modbus(crate::modbus::sink::ModbusSinkConfig),
    Webhook(crate::webhook::WebhookSinkConfig),
}

impl SinkTarget {
    /// Where rows go, for people.
    pub fn describe(&self) -> String {
        match self {
            SinkTarget::File { path, .. } => path.display().to_string(),
            SinkTarget::Stdout => "stdout".to_string(),
            SinkTarget::Parquet(config) => format!("{} (parquet)", config.path.display()),
            SinkTarget::Mqtt(config) => format!("{} (mqtt)", config.broker.address()),
            SinkTarget::Kafka(config) => format!("kafka {} topic {}", config.brokers, config.topic),
            SinkTarget::Webhook(config) => format!("{} (webhook)", config.url),
            SinkTarget::Modbus(config) => format!(
                "modbus {}:{} unit {}",
                config.device.host, config.device.port, config.device.unit_id
            ),
        }
    }
}

impl SinkTarget {
    /// Opens (creates) the target; `changelog` marks each row as an insert or a delete.
    pub fn open(
        &self,
        schema: SchemaRef,
        changelog: bool,
    ) -> Result<Box<dyn SinkWriter>, SinkError> {
        Ok(match self {
            SinkTarget::Stdout => Box::new(RowWriter::stdout(schema, changelog)),
            SinkTarget::File { path, format } => {
                Box::new(RowWriter::file(path, *format, schema, changelog)?)
            }
            SinkTarget::Parquet(config) => Box::new(ParquetWriter::open(config.clone(), schema)?),
            SinkTarget::Mqtt(config) => {
                Box::new(MqttPublisher::open(config.clone(), schema, changelog)?)
            }
            SinkTarget::Kafka(config) => {
                Box::new(KafkaProducer::open(config.clone(), schema, changelog)?)
            }
            SinkTarget::Modbus(config) => Box::new(ModbusWriter::open(config.clone(), schema)?),
            SinkTarget::Webhook(config) => {
                Box::new(WebhookSender::open(config.clone(), schema, changelog)?)
            }
        })
    }
}
