//! What a statement sent over the Postgres port asks for, decided on its first words.
//!
//! Postgres clients send more than pipeline SQL: drivers open transactions (`BEGIN`, psycopg
//! before every first statement), set session variables and ask for server settings; those
//! are answered without touching the pipeline. `SUBSCRIBE` (Materialize's statement) streams a
//! live view. Queries (`SELECT`, `WITH`, `VALUES`) run on DataFusion over the live views and
//! the warehouse. Everything else is a pipeline statement, applied as `POST /v1/sql` would.

use vibelux_queries::parser::{Statement, parse_pipeline};

use crate::auth::Role;
use crate::diagnostics::render;

/// A statement, by what serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgStatement {
    /// `BEGIN`, `START TRANSACTION`: transactions are accepted and mean nothing here.
    Begin,
    /// `COMMIT`, `END`, `ROLLBACK`, `ABORT`.
    End { tag: &'static str },
    /// `SET`, `RESET`, `DISCARD`: session settings drivers send, acknowledged.
    Setting { tag: &'static str },
    /// `SHOW name` of a server setting (`server_version`, `transaction_isolation`, …).
    ShowSetting(String),
    /// `SUBSCRIBE [TO] view [WITH (SNAPSHOT = bool, PROGRESS = bool)]`, or the same inside
    /// `COPY (…) TO STDOUT`.
    Subscribe(Subscription),
    /// A query, run by DataFusion over the live views and the warehouse.
    Query(String),
    /// A pipeline statement (`CREATE`, `DROP`, `SHOW VIEWS`, `EXPLAIN`), applied as over the API.
    Pipeline { sql: String, changes: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub view: String,
    /// Start with the view's contents (`SNAPSHOT`, default true).
    pub snapshot: bool,
    /// Also a row each time the view's time advances without changes (`PROGRESS`).
    pub progress: bool,
    /// Streamed as `COPY … TO STDOUT` (text rows) instead of a query result.
    pub copy: bool,
}

impl PgStatement {
    /// The least role that may run it.
    pub fn needs(&self) -> Role {
        match self {
            PgStatement::Pipeline { changes: true, .. } => Role::Engineer,
            _ => Role::Viewer,
        }
    }
}

/// The pipeline's own `SHOW` objects; any other `SHOW` names a server setting.
const PIPELINE_SHOWS: &[&str] = &[
    "sources", "tables", "views", "sinks", "models", "alarms", "create",
];

/// Splits off the first word (letters, digits, `_`), after whitespace and comments.
fn first_word(text: &str) -> (String, &str) {
    let text = skip_blank(text);
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    (text[..end].to_ascii_lowercase(), &text[end..])
}

/// Skips whitespace, `-- …` and `/* … */` comments.
fn skip_blank(mut text: &str) -> &str {
    loop {
        let trimmed = text.trim_start();
        if let Some(rest) = trimmed.strip_prefix("--") {
            text = rest.split_once('\n').map_or("", |(_, rest)| rest);
        } else if let Some(rest) = trimmed.strip_prefix("/*") {
            text = rest.split_once("*/").map_or("", |(_, rest)| rest);
        } else {
            return trimmed;
        }
    }
}

/// Splits a simple query's text into its statements, at semicolons outside quotes and
/// comments (psql sends `-c "A; B"` as one message).
pub fn split(sql: &str) -> Vec<&str> {
    let mut statements = Vec::new();
    let (mut start, mut quote) = (0, None::<u8>);
    let bytes = sql.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        match quote {
            Some(open) if byte == open => quote = None,
            Some(_) => {}
            None => match byte {
                b'\'' | b'"' => quote = Some(byte),
                b'-' if bytes.get(index + 1) == Some(&b'-') => {
                    index = sql[index..]
                        .find('\n')
                        .map_or(bytes.len(), |end| index + end);
                }
                b'/' if bytes.get(index + 1) == Some(&b'*') => {
                    index = sql[index..]
                        .find("*/")
                        .map_or(bytes.len(), |end| index + end + 1);
                }
                b';' => {
                    statements.push(&sql[start..index]);
                    start = index + 1;
                }
                _ => {}
            },
        }
        index += 1;
    }
    statements.push(&sql[start..]);
    statements
        .into_iter()
        .filter(|statement| !skip_blank(statement).is_empty())
        .collect()
}

/// Classifies one statement (a trailing `;` is allowed).
pub fn classify(sql: &str) -> Result<PgStatement, String> {
    let body = skip_blank(sql).trim_end().trim_end_matches(';').trim_end();
    let (word, rest) = first_word(body);
    Ok(match word.as_str() {
        "begin" | "start" => PgStatement::Begin,
        "commit" | "end" => PgStatement::End { tag: "COMMIT" },
        "rollback" | "abort" => PgStatement::End { tag: "ROLLBACK" },
        "set" => PgStatement::Setting { tag: "SET" },
        "reset" => PgStatement::Setting { tag: "RESET" },
        "discard" => PgStatement::Setting { tag: "DISCARD ALL" },
        "subscribe" => PgStatement::Subscribe(subscription(rest, false)?),
        "copy" => copy(rest)?,
        "select" | "with" | "values" | "table" => PgStatement::Query(body.to_string()),
        "show" => {
            let (what, after) = first_word(rest);
            if PIPELINE_SHOWS.contains(&what.as_str()) {
                pipeline(body)?
            } else if what.is_empty() || !skip_blank(after).is_empty() && what != "transaction" {
                return Err(format!(
                    "SHOW takes one of {} or a server setting such as server_version",
                    PIPELINE_SHOWS.join(", ")
                ));
            } else if what == "transaction" {
                PgStatement::ShowSetting("transaction_isolation".into())
            } else {
                PgStatement::ShowSetting(what)
            }
        }
        "explain" => {
            let (next, _) = first_word(rest);
            if matches!(next.as_str(), "select" | "with" | "values") {
                PgStatement::Query(body.to_string())
            } else {
                pipeline(body)?
            }
        }
        "" if body.starts_with('(') => PgStatement::Query(body.to_string()),
        _ => pipeline(body)?,
    })
}

/// A pipeline statement, and whether it changes anything, decided by parsing all of it: the
/// role a text needs is that of its most demanding statement, whatever its first word says.
fn pipeline(body: &str) -> Result<PgStatement, String> {
    let statements = parse_pipeline(body).map_err(|error| render("statement", body, &error))?;
    let changes = statements.iter().any(|located| {
        !matches!(
            located.statement,
            Statement::Show(_) | Statement::Explain(_)
        )
    });
    Ok(PgStatement::Pipeline {
        sql: body.to_string(),
        changes,
    })
}

/// `COPY (SUBSCRIBE …) TO STDOUT`: the only `COPY` served.
fn copy(rest: &str) -> Result<PgStatement, String> {
    let refused =
        || "COPY is served for subscriptions only: COPY (SUBSCRIBE view) TO STDOUT".to_string();
    let inner = skip_blank(rest).strip_prefix('(').ok_or_else(refused)?;
    let close = inner.rfind(')').ok_or_else(refused)?;
    let (query, tail) = (&inner[..close], &inner[close + 1..]);
    let (to, tail) = first_word(tail);
    let (stdout, tail) = first_word(tail);
    if to != "to" || stdout != "stdout" || !skip_blank(tail).is_empty() {
        return Err(refused());
    }
    let (word, rest) = first_word(query);
    if word != "subscribe" {
        return Err(refused());
    }
    Ok(PgStatement::Subscribe(subscription(rest, true)?))
}

/// `[TO] view [WITH (option [=] value, …)]`.
fn subscription(rest: &str, copy: bool) -> Result<Subscription, String> {
    let usage = "SUBSCRIBE [TO] view [WITH (SNAPSHOT = true|false, PROGRESS = true|false)]";
    let (mut name, mut rest) = name(rest).ok_or_else(|| format!("expected {usage}"))?;
    if name.eq_ignore_ascii_case("to") {
        (name, rest) = self::name(rest).ok_or_else(|| format!("expected {usage}"))?;
    }
    let mut subscription = Subscription {
        view: name,
        snapshot: true,
        progress: false,
        copy,
    };
    let (with, options) = first_word(rest);
    match with.as_str() {
        "" if skip_blank(options).is_empty() => return Ok(subscription),
        "with" => {}
        _ => return Err(format!("expected {usage}")),
    }
    let options = skip_blank(options)
        .strip_prefix('(')
        .and_then(|o| o.trim_end().strip_suffix(')'))
        .ok_or_else(|| format!("expected {usage}"))?;
    for option in options.split(',') {
        let (key, value) = match option.split_once('=') {
            Some((key, value)) => (key.trim(), value.trim()),
            None => {
                let mut words = option.split_whitespace();
                let key = words.next().unwrap_or_default();
                (key, words.next().unwrap_or("true"))
            }
        };
        let value = match value.to_ascii_lowercase().as_str() {
            "true" | "on" | "1" => true,
            "false" | "off" | "0" => false,
            other => {
                return Err(format!(
                    "option {key}: expected true or false, found `{other}`"
                ));
            }
        };
        match key.to_ascii_lowercase().as_str() {
            "snapshot" => subscription.snapshot = value,
            "progress" => subscription.progress = value,
            other => return Err(format!("unknown SUBSCRIBE option `{other}`: {usage}")),
        }
    }
    Ok(subscription)
}

/// A name, bare (lowercased, as Postgres folds it) or double-quoted, and what follows it.
fn name(text: &str) -> Option<(String, &str)> {
    let text = skip_blank(text);
    if let Some(quoted) = text.strip_prefix('"') {
        let end = quoted.find('"')?;
        return Some((quoted[..end].to_string(), &quoted[end + 1..]));
    }
    let (word, rest) = first_word(text);
    (!word.is_empty()).then_some((word, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_settings_and_queries_are_told_apart_from_pipeline_statements() {
        assert_eq!(classify("BEGIN").unwrap(), PgStatement::Begin);
        assert_eq!(
            classify("rollback;").unwrap(),
            PgStatement::End { tag: "ROLLBACK" }
        );
        assert_eq!(
            classify("SET extra_float_digits = 3").unwrap(),
            PgStatement::Setting { tag: "SET" }
        );
        assert_eq!(
            classify("SHOW server_version").unwrap(),
            PgStatement::ShowSetting("server_version".into())
        );
        assert_eq!(
            classify("SHOW TRANSACTION ISOLATION LEVEL").unwrap(),
            PgStatement::ShowSetting("transaction_isolation".into())
        );
        assert!(matches!(
            classify("-- hi\n/* there */ select 1").unwrap(),
            PgStatement::Query(q) if q.starts_with("select")
        ));
        assert!(matches!(
            classify("SHOW VIEWS").unwrap(),
            PgStatement::Pipeline { changes: false, .. }
        ));
        // The role follows every statement of the text, not its first word.
        assert_eq!(
            classify("SHOW VIEWS; CREATE VIEW v AS SELECT 1 FROM r")
                .unwrap()
                .needs(),
            Role::Engineer
        );
        let create = classify("CREATE VIEW v AS SELECT 1").unwrap();
        assert_eq!(create.needs(), Role::Engineer);
        assert_eq!(classify("SELECT 1").unwrap().needs(), Role::Viewer);
    }

    #[test]
    fn a_simple_query_splits_at_semicolons_outside_quotes_and_comments() {
        assert_eq!(
            split("SELECT ';' AS a; -- x; y\nSELECT 2 /* ; */;;"),
            vec!["SELECT ';' AS a", " -- x; y\nSELECT 2 /* ; */"]
        );
        assert!(split(" ; -- only a comment").is_empty());
    }

    #[test]
    fn subscribe_takes_a_view_options_and_the_copy_form() {
        assert_eq!(
            classify("SUBSCRIBE TO zone_minute").unwrap(),
            PgStatement::Subscribe(Subscription {
                view: "zone_minute".into(),
                snapshot: true,
                progress: false,
                copy: false,
            })
        );
        assert_eq!(
            classify("copy (subscribe \"Zone\" with (snapshot = false, progress)) to stdout")
                .unwrap(),
            PgStatement::Subscribe(Subscription {
                view: "Zone".into(),
                snapshot: false,
                progress: true,
                copy: true,
            })
        );
        assert!(
            classify("COPY t TO STDOUT")
                .unwrap_err()
                .contains("subscriptions only")
        );
        assert!(
            classify("SUBSCRIBE v WITH (colour = true)")
                .unwrap_err()
                .contains("unknown SUBSCRIBE option `colour`")
        );
        assert!(
            classify("SUBSCRIBE")
                .unwrap_err()
                .contains("expected SUBSCRIBE")
        );
    }
}
