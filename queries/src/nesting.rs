//! Bounds on the shape of a statement, checked on its text before sqlparser sees it.
//!
//! sqlparser backtracks through some unfinished constructs, and its work doubles with each
//! level; its own recursion limit does not count every path. A statement of a few hundred
//! bytes could then hold a thread for years, and statements arrive over the API. Found by
//! fuzzing (`fuzz/regressions/sql/`).

use crate::error::{Position, SqlError, SqlResult};

/// How deep parentheses may nest. sqlparser backtracks through some unfinished constructs
/// (a function call whose parentheses never close), doubling its work with each level: 20
/// levels took over a second and 60 would take years, so a 450-byte statement could hold a
/// thread forever. Found by fuzzing. Counted on the text, before sqlparser sees it.
pub const MAX_PARENTHESES: usize = 16;

/// The most parts a dotted name may have (`catalog.schema.table.column`, and a field or two
/// beyond): sqlparser backtracks through a long chain of them (`a.ts.ts.ts.…`) the same way.
pub const MAX_NAME_PARTS: usize = 6;

/// Refuses text whose parentheses or brackets nest deeper than [`MAX_PARENTHESES`], at the
/// one that does, and INTERVAL followed by another INTERVAL, `NOT` or a prefix operator
/// instead of its value: sqlparser backtracks through a chain of those (`INTERVAL -
/// INTERVAL - …`), doubling its work per link up to its recursion limit, which is years.
/// Quotes and comments do not count.
pub(crate) fn check(sql: &str) -> SqlResult<()> {
    let (mut depth, mut line, mut column) = (0usize, 1u64, 0u64);
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    let (mut line_comment, mut block_comment) = (false, false);
    // The word being read, and the last complete word outside quotes and comments.
    let (mut word, mut previous) = (String::new(), String::new());
    // Dots joining the parts of the name being read.
    let mut dots = 0usize;
    while let Some(c) = chars.next() {
        column += 1;
        let in_code = quote.is_none() && !line_comment && !block_comment;
        if in_code && (c.is_ascii_alphanumeric() || c == '_') {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            let ended = std::mem::take(&mut word);
            if previous.eq_ignore_ascii_case("interval")
                && (ended.eq_ignore_ascii_case("interval") || ended.eq_ignore_ascii_case("not"))
            {
                return Err(interval_without_value(
                    Position {
                        line,
                        column: column - ended.len() as u64,
                    },
                    &ended,
                ));
            }
            previous = ended;
        }
        if in_code && !c.is_whitespace() {
            // A prefix operator where INTERVAL's value belongs (`INTERVAL - INTERVAL …`) is
            // the same backtracking trap; a comment start (`--`) is not an operator.
            let comment = c == '-' && chars.peek() == Some(&'-');
            if previous.eq_ignore_ascii_case("interval")
                && matches!(c, '-' | '+' | '~' | '!' | '@' | '|')
                && !comment
            {
                return Err(interval_without_value(
                    Position { line, column },
                    &c.to_string(),
                ));
            }
            previous.clear();
        }
        if in_code {
            if c == '.' {
                dots += 1;
                if dots >= MAX_NAME_PARTS {
                    return Err(SqlError::new(
                        Position { line, column },
                        format!("a name has at most {MAX_NAME_PARTS} parts joined by dots"),
                    ));
                }
            } else if !(c == '"' || c == '`') {
                dots = 0;
            }
        }
        if c == '\n' {
            (line, column, line_comment) = (line + 1, 0, false);
            continue;
        }
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if line_comment => {}
            None if block_comment => {
                if c == '*' && chars.peek() == Some(&'/') {
                    block_comment = false;
                }
            }
            None => match c {
                '\'' | '"' => quote = Some(c),
                '-' if chars.peek() == Some(&'-') => line_comment = true,
                '/' if chars.peek() == Some(&'*') => block_comment = true,
                '(' | '[' => {
                    depth += 1;
                    if depth > MAX_PARENTHESES {
                        return Err(SqlError::new(
                            Position { line, column },
                            format!(
                                "parentheses nest deeper than {MAX_PARENTHESES} levels here: split the expression into views"
                            ),
                        ));
                    }
                }
                ')' | ']' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
    }
    Ok(())
}

fn interval_without_value(position: Position, found: &str) -> SqlError {
    SqlError::new(
        position,
        format!("INTERVAL takes a quoted value, e.g. INTERVAL '1 minute', not `{found}`"),
    )
}
