//! Live views: materialized views served to subscribers while the pipeline runs.
//!
//! [`publish`] is the dataflow's side (changes to worker 0, released per completed timestamp);
//! [`view`] holds each view's contents and recent history for every subscriber to share;
//! [`rounds`] paces delivery so that thousands of subscribers cost a bounded number of sends;
//! [`protocol`] encodes what subscribers receive.

pub mod protocol;
pub mod publish;
pub mod rounds;
pub mod view;
