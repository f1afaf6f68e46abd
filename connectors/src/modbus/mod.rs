//! Modbus TCP, the protocol the PLCs running HVAC, dehumidifiers, CO2 dosing, lights and
//! irrigation speak.
//!
//! Nothing is pushed: the engine polls. A tag map ([`tags`]) says which registers hold which
//! values; [`plan`] turns each poll group into the fewest reads the protocol allows; [`codec`]
//! turns registers into typed values and back, whatever the device's byte order; [`poller`]
//! runs the polls of one device on a thread of its own; [`source`] makes its readings rows;
//! [`sink`] writes tags within the [`safety`] limits the map declares; [`plc_simulator`] is a grow room's PLC to poll and write to.

pub mod codec;
pub mod connector;
pub mod options;
pub mod plan;
pub mod plc_simulator;
pub mod poller;
pub mod safety;
pub mod sink;
pub mod source;
pub mod tags;
