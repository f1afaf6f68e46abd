//! What every layer of Vibelux agrees on, at the bottom of the crate graph.
//!
//! Connectors produce and consume [`row::Row`]s, operators transform them, the planner describes
//! their columns with the [`metadata`] keys. The planner hands a connector its `WITH (…)`
//! [`options`] and keeps the spec it plans ([`connector`]); the engine starts a source's readers
//! ([`source`]) and opens a sink's writers ([`sink`]) through those specs. Keeping these here lets
//! each layer depend on the contract rather than on the layer that happens to implement it: the
//! SQL crate knows no connector, and adding one touches no other crate.

#![deny(unsafe_code)]

pub mod calendar;
pub mod checkpoint;
pub mod connector;
pub mod decimal;
pub mod metadata;
pub mod options;
pub mod row;
pub mod sink;
pub mod source;
pub mod wire;
