//! Parquet: a Hive-partitioned warehouse written in atomic epochs.

pub mod connector;
pub mod options;
pub mod sink;
