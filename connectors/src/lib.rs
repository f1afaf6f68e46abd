//! Sources and sinks of Vibelux, each a plug-in the engine finds through [`registry`].
//!
//! Each connector is a folder (or file) of its own: its options and their checks
//! (`options.rs`), its plug-in face (`connector.rs`: the `SourceConnector`/`SinkConnector` the
//! planner asks, and the spec the engine starts), and its readers and writers. Sources: the
//! embedded [`simulator`], [`file`]s, [`mqtt`], [`sparkplug`] (over MQTT), [`kafka`] and
//! [`modbus`], and the engine's own [`audit`] trail; sinks: [`file`]s and stdout, [`parquet`], [`mqtt`], [`kafka`], [`modbus`] and
//! [`webhook`]s.
//!
//! Shared by them: [`source::read_source`] turns readers into streams of rows, dead letters and
//! late rows with watermarks ([`watermark`]); [`table::read_table`] keeps reference data by key;
//! [`sink`] is the operator that delivers to writers; [`payload`] decodes JSON and CSV against a
//! declared schema, [`json_row`] encodes rows, [`bytes_text`] makes bad bytes readable.

pub mod audit;
pub mod background;
pub mod bytes_text;
pub mod file;
pub mod fixed_columns;
pub mod json_row;
pub mod kafka;
pub mod message_options;
pub mod modbus;
pub mod mqtt;
pub mod parquet;
pub mod payload;
pub mod registry;
pub mod simulator;
pub mod sink;
pub mod source;
pub mod sparkplug;
pub mod table;
pub mod template;
pub mod watermark;
pub mod webhook;
