//! Parquet: a Hive-partitioned warehouse written in atomic epochs, and any Parquet files or
//! warehouse (ours or another tool's) replayed as a source.

mod commit;
pub mod connector;
mod epoch;
mod folder;
mod held;
pub mod options;
pub mod sink;
pub mod source;
