//! Live views: materialized views served to subscribers while the pipeline runs.
//!
//! [`publish`] is the dataflow's side (changes to worker 0, released per completed timestamp);
//! [`view`] holds each view's contents and recent history for every subscriber to share;
//! [`fanout`] frames changes once and writes them to thousands of subscribers, one socket write
//! per subscriber per sweep, from [`seat`]s into each subscriber's [`outlet`]; [`protocol`] encodes what
//! subscribers receive and [`frames`] frames it for the socket.

pub mod fanout;
pub mod frames;
pub mod outlet;
pub mod protocol;
pub mod publish;
pub mod seat;
pub mod view;
