//! The Vibelux engine: plans from `vibelux-queries` built into timely dataflows and run.
//!
//! [`runtime`] builds and runs the dataflow on worker threads; [`pipeline`] loads pipeline files
//! (planning them against the connectors' registry) and runs ad-hoc queries to completion; [`diagnostics`] renders SQL errors for people; [`format`]
//! prints result rows; [`live`] keeps materialized views for subscribers and [`server`] serves
//! them, the dashboard and metrics over HTTP. The `vibelux` binary (`main.rs`) is the command
//! line over these.

pub mod auth;
pub mod confinement;
pub mod control;
pub mod diagnostics;
pub mod evaluate;
pub mod format;
pub mod live;
pub mod partition_groups;
pub mod pipeline;
pub mod runtime;
pub mod server;
pub mod state;
pub mod taps;
pub mod warehouse;
