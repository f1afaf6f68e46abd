//! Errors of the SQL layer, located at a line and column of the pipeline text.

use std::fmt;

/// A position in the SQL text (1-based; line 0 when unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl Position {
    pub fn of(location: datafusion::sql::sqlparser::tokenizer::Location) -> Self {
        Position {
            line: location.line,
            column: location.column,
        }
    }

    /// From the location type DataFusion's diagnostics use.
    pub fn of_diagnostic(location: datafusion::common::Location) -> Self {
        Position {
            line: location.line,
            column: location.column,
        }
    }
}

/// What went wrong and where. Displayed as `line:column: message`; the CLI prefixes the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SqlError {
    pub position: Position,
    pub message: String,
}

impl SqlError {
    pub fn new(position: Position, message: impl Into<String>) -> Self {
        SqlError {
            position,
            message: message.into(),
        }
    }

    /// Converts a sqlparser error, moving its "at Line: l, Column: c" into the position.
    pub fn from_parser(error: datafusion::sql::sqlparser::parser::ParserError) -> Self {
        use datafusion::sql::sqlparser::parser::ParserError;
        let text = match error {
            ParserError::TokenizerError(text) | ParserError::ParserError(text) => text,
            ParserError::RecursionLimitExceeded => format!(
                "the statement nests deeper than {} levels (operators, calls, subqueries): split it into views",
                crate::parser::MAX_NESTING
            ),
        };
        let marker = " at Line: ";
        match text.rfind(marker) {
            Some(at) => {
                let (message, location) = text.split_at(at);
                let numbers: Vec<u64> = location
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|part| part.parse().ok())
                    .collect();
                let position = match numbers[..] {
                    [line, column, ..] => Position { line, column },
                    _ => Position::default(),
                };
                SqlError::new(position, tidy_parser_message(message))
            }
            None => SqlError::new(Position::default(), tidy_parser_message(&text)),
        }
    }
}

/// sqlparser says "Expected: X, found: Y"; read better as "expected X, found Y".
fn tidy_parser_message(message: &str) -> String {
    let message = message.trim();
    match message.strip_prefix("sql parser error: ") {
        Some(rest) => tidy_parser_message(rest),
        None => message.replacen("Expected: ", "expected ", 1),
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.position.line > 0 {
            write!(
                f,
                "{}:{}: {}",
                self.position.line, self.position.column, self.message
            )
        } else {
            write!(f, "{}", self.message)
        }
    }
}

pub type SqlResult<T> = Result<T, SqlError>;

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::parser::ParserError;

    #[test]
    fn a_parser_error_keeps_its_position_apart_from_its_message() {
        let error = SqlError::from_parser(ParserError::ParserError(
            "Expected: an expression, found: FROM at Line: 3, Column: 12".into(),
        ));
        assert_eq!(
            error.position,
            Position {
                line: 3,
                column: 12
            }
        );
        assert_eq!(
            error.to_string(),
            "3:12: expected an expression, found: FROM"
        );
    }
}
