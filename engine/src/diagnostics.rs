//! Rendering SQL errors the way compilers do: file, line, column, the line itself and a caret.

use vibelux_queries::error::SqlError;

/// `path:line:column: message`, then the offending line with a caret under the column.
pub fn render(path: &str, sql: &str, error: &SqlError) -> String {
    let position = error.position;
    if position.line == 0 {
        return format!("{path}: {}", error.message);
    }
    let mut out = format!(
        "{path}:{}:{}: {}",
        position.line, position.column, error.message
    );
    if let Some(line) = sql.lines().nth(position.line as usize - 1) {
        let number = position.line.to_string();
        let gutter = " ".repeat(number.len());
        let caret_offset: String = line
            .chars()
            .take(position.column.saturating_sub(1) as usize)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        out.push_str(&format!(
            "\n{gutter} |\n{number} | {line}\n{gutter} | {caret_offset}^"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vibelux_queries::error::Position;

    #[test]
    fn the_caret_points_at_the_column() {
        let error = SqlError::new(Position { line: 2, column: 6 }, "unknown relation `climat`");
        let text = render("p.sql", "SELECT 1;\nFROM climat", &error);
        assert_eq!(
            text,
            "p.sql:2:6: unknown relation `climat`\n  |\n2 | FROM climat\n  |      ^"
        );
    }
}
