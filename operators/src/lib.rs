//! Dataflow operators of Vibelux.
//!
//! Each file is one family of timely operators, declared as an extension trait on streams:
//! [`calc`] evaluates filters and projections with DataFusion, [`window`] assigns rows to
//! windows (on a [`local_time`] clock when a time zone is given), [`aggregate`] maintains
//! `GROUP BY` results and closes windows (fed, in a cluster, by [`partial_aggregate`]'s partial
//! groups, which cross between processes in `partial_wire`'s compact form; [`time_weighted`] computes DLI and the other time-weighted aggregates),
//! [`arranged_join`] joins on keys, [`changes`] turns appends into
//! updates and consolidates them, [`anomaly`] scores series and [`analytic`] computes `LAG` and
//! running aggregates (both taking a series [`in_event_time`] order), [`alarm`] raises and
//! clears alarms, [`session`] merges session windows, [`temporal_filter`] keeps the recent rows, [`top_n`] the first rows of each group in an order; [`cultivation`] holds the psychrometric
//! formulas (VPD, dew point) that SQL functions evaluate. [`columnar`] is how rows (the [`row`]
//! model of `vibelux-interfaces`, re-exported here) cross into Arrow.

pub mod accumulator;
pub mod aggregate;
pub mod alarm;
pub mod analytic;
pub mod anomaly;
pub mod arranged_join;
pub mod as_of_join;
pub mod calc;
pub mod changes;
pub mod columnar;
pub mod cultivation;
pub mod in_event_time;
pub mod interval_join;
pub mod local_time;
pub mod partial_aggregate;
mod partial_wire;
/// The row model, from the crate every layer shares.
pub use vibelux_interfaces::{decimal, row};
pub mod session;
pub mod temporal_filter;
pub mod time_weighted;
pub mod top_n;
pub mod window;
