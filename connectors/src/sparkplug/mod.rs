//! Sparkplug B, the MQTT convention industrial gateways and PLC bridges speak.
//!
//! Unlike plain MQTT, a Sparkplug message cannot be read on its own: edge nodes announce their
//! metrics in birth certificates (names, types, aliases) and then send compact data by alias,
//! with a sequence number on every message and a death certificate (their MQTT will) when they
//! drop off. Vibelux acts as a host application: it keeps each node's birth, reads data through
//! it, asks a node to rebirth when it has lost track, and turns deaths into stale rows.

pub mod connector;
pub mod host;
pub mod options;
pub mod proto;
pub mod source;
pub mod topic;
