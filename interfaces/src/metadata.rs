//! Keys of the Arrow field metadata Vibelux records on columns.
//!
//! Units travel with a column from `CREATE SOURCE … UNIT '°C'` through views into every Parquet
//! file, and a timestamp without a zone says which zone its wall-clock time is in.

/// A column's unit (`°C`, `ppm`), written into every file's schema.
pub const UNIT: &str = "unit";

/// Which zone a timestamp without one is wall-clock time in.
pub const TIME_ZONE: &str = "time_zone";

/// Arrow's extension-type key, and the canonical name of JSON text: a `JSON` column is text whose
/// every value is a JSON document, and says so in Parquet files' Arrow schemas.
pub const EXTENSION_NAME: &str = "ARROW:extension:name";
pub const JSON_EXTENSION: &str = "arrow.json";

/// Whether a field is declared `JSON`.
pub fn is_json(field: &arrow_schema::Field) -> bool {
    field.metadata().get(EXTENSION_NAME).map(String::as_str) == Some(JSON_EXTENSION)
}

/// Marks the column a table's reader fills from a change log's `_op` field (`insert` or
/// `delete`, as Vibelux's sinks write a view's changes): read after the table's own columns, and
/// not one of them. A connector infers nothing from it (a raw payload does not fill it).
pub const CHANGELOG_OP: &str = "vibelux.changelog_op";

/// The name of that column, as the sinks write it.
pub const CHANGELOG_OP_NAME: &str = "_op";

/// Whether a field is a table's change-log column.
pub fn is_changelog_op(field: &arrow_schema::Field) -> bool {
    field.metadata().contains_key(CHANGELOG_OP)
}
