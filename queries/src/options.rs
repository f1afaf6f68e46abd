//! `WITH (…)` options, handed to the connector a statement names.
//!
//! The planner knows no connector: it finds the one named by `connector = '…'` in the registry
//! the engine gave it, and the connector takes the options it understands. What is left is
//! refused here by name, listing what the connector understands.

use vibelux_interfaces::options::{OptionEntry, OptionError, Options};

use crate::error::{Position, SqlError};
use crate::parser;

impl From<Position> for vibelux_interfaces::options::Position {
    fn from(position: Position) -> Self {
        vibelux_interfaces::options::Position {
            line: position.line,
            column: position.column,
        }
    }
}

impl From<vibelux_interfaces::options::Position> for Position {
    fn from(position: vibelux_interfaces::options::Position) -> Self {
        Position {
            line: position.line,
            column: position.column,
        }
    }
}

impl From<OptionError> for SqlError {
    fn from(error: OptionError) -> Self {
        SqlError::new(error.position.into(), error.message)
    }
}

/// The options of a statement starting at `statement`, as written.
pub fn options_of(
    entries: &[parser::OptionEntry],
    statement: Position,
) -> Result<Options, SqlError> {
    let entries = entries.iter().map(|entry| OptionEntry {
        key: entry.key.value.clone(),
        key_position: Position::of(entry.key.span.start).into(),
        value: entry.value.clone(),
        value_position: entry.value_position.into(),
    });
    Ok(Options::new(entries, statement.into())?)
}
