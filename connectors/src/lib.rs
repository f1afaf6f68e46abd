//! Sources and sinks of Vibelux.
//!
//! A source is a [`source::SourceReader`] per worker turned into streams of admitted rows, dead
//! letters and late rows by [`source::read_source`]; [`payload`] decodes JSON and CSV against a
//! declared schema and [`watermark`] tracks event-time progress. Sources here: the embedded
//! [`simulator`] facility, [`file_source`], [`mqtt`], [`sparkplug`] (over MQTT) and [`kafka`]. Sinks: [`file_sink`] (files and stdout), written by the operator in [`sink`].

pub mod background;
pub mod bytes_text;
pub mod file_sink;
pub mod file_source;
pub mod json_row;
pub mod kafka;
pub mod modbus;
pub mod mqtt;
pub mod parquet_sink;
pub mod payload;
pub mod simulator;
pub mod sink;
pub mod source;
pub mod sparkplug;
pub mod table;
pub mod target;
pub mod template;
pub mod watermark;
pub mod webhook;
