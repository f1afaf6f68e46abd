//! The connectors this build of Vibelux offers, in the order messages list them. Adding a
//! connector is a folder of its own and a line here.

use std::path::Path;

use vibelux_interfaces::connector::Registry;

use crate::{audit, file, kafka, modbus, mqtt, parquet, simulator, sparkplug, webhook};

/// Every source and sink connector.
pub fn registry() -> Registry {
    Registry::default()
        .source(simulator::connector::Simulator)
        .source(file::connector::Files)
        .source(mqtt::connector::Mqtt)
        .source(sparkplug::connector::Sparkplug)
        .source(kafka::connector::Kafka)
        .source(modbus::connector::Modbus)
        .source(parquet::connector::Parquet)
        .sink(file::connector::Files)
        .sink(file::connector::Stdout)
        .sink(parquet::connector::Parquet)
        .sink(mqtt::connector::Mqtt)
        .sink(kafka::connector::Kafka)
        .sink(modbus::connector::Modbus)
        .sink(webhook::connector::Webhook)
}

/// Every connector, with `audit` reading the audit trail the engine writes at `path`.
pub fn with_audit_trail(path: &Path) -> Registry {
    registry().source(audit::connector::AuditTrail::at(path))
}
