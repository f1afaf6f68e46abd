//! Files: JSON lines or CSV read (replayed or followed) and written, and standard output.

pub mod connector;
mod follow;
mod lines;
pub mod options;
mod resume;
pub mod sink;
pub mod source;
mod stripes;
