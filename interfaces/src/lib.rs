//! What every layer of Vibelux agrees on, at the bottom of the crate graph.
//!
//! Connectors produce and consume [`row::Row`]s, operators transform them, the planner describes
//! their columns with the [`metadata`] keys, and the engine moves them from sources to sinks
//! through the [`sink::SinkWriter`] contract. Keeping these here lets each layer depend on the
//! contract rather than on the layer that happens to implement it.

#![deny(unsafe_code)]

pub mod connector;
pub mod metadata;
pub mod options;
pub mod row;
pub mod sink;
pub mod source;
