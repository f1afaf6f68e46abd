//! Keys of the Arrow field metadata Vibelux records on columns.
//!
//! Units travel with a column from `CREATE SOURCE … UNIT '°C'` through views into every Parquet
//! file, and a timestamp without a zone says which zone its wall-clock time is in.

/// A column's unit (`°C`, `ppm`), written into every file's schema.
pub const UNIT: &str = "unit";

/// Which zone a timestamp without one is wall-clock time in.
pub const TIME_ZONE: &str = "time_zone";
