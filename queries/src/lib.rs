//! The SQL dialect of Vibelux: from pipeline text to a dataflow plan.
//!
//! [`parser`] reads statements (sqlparser underneath); [`planner`] keeps the catalog and runs
//! each statement ([`catalog`] those that only read or edit it), handing queries to DataFusion
//! for name resolution and type checking ([`context`]) after replacing window table functions
//! ([`window_functions`]); [`lowering`] turns DataFusion's logical plan into [`plan`] nodes the
//! engine builds operators from. Sources and sinks are planned by the connector a statement
//! names, found in the registry the engine hands the [`planner::Planner`]; [`options`] bridges
//! statement options to it. This crate knows no connector, only the traits of
//! `vibelux-interfaces`; [`alarms`] and [`models`] plan `CREATE ALARM` and `CREATE MODEL`.

pub mod alarms;
pub mod as_of;
pub mod catalog;
pub mod context;
pub mod error;
pub mod functions;
pub mod lowering;
pub mod models;
pub mod nesting;
pub mod options;
pub mod parser;
pub mod plan;
pub mod planner;
mod sources;
pub mod time_weighted;
pub mod window_functions;
