//! The Vibelux SQL dialect on top of sqlparser.
//!
//! Pipelines need statements standard SQL lacks — `CREATE SOURCE … WATERMARK FOR …`,
//! `CREATE SINK … FROM …`, `SHOW SOURCES` — so this parser reads those itself and hands every
//! query (`SELECT …`, the body of a view) to sqlparser's own query parser, the one DataFusion uses.
//! The whole file is tokenized at once so positions in errors are positions in the file.

use datafusion::sql::sqlparser::ast::{ColumnDef, Expr, Ident, ObjectName, Query, Value};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::error::{Position, SqlError, SqlResult};

mod create_source;
mod dialect;
use create_source::parse_create_source;
pub use dialect::VibeluxDialect;

/// Locates a sqlparser error.
fn parsing<T>(result: Result<T, datafusion::sql::sqlparser::parser::ParserError>) -> SqlResult<T> {
    result.map_err(SqlError::from_parser)
}

/// One statement of a pipeline file, with where it starts.
#[derive(Debug, Clone)]
pub struct Located {
    pub statement: Statement,
    pub position: Position,
    /// The statement's text, for `SHOW` and error reports.
    pub text: String,
}

#[derive(Debug, Clone)]
pub enum Statement {
    CreateSource(Box<CreateSource>),
    CreateView(CreateView),
    CreateSink(CreateSink),
    CreateModel(CreateModel),
    CreateAlarm(Box<CreateAlarm>),
    Drop {
        kind: ObjectKind,
        name: Ident,
        if_exists: bool,
    },
    Show(ObjectKind),
    Explain(Box<Located>),
    /// `SET TIME ZONE 'Europe/Amsterdam'`: the zone windows planned after it lay their days out
    /// in, unless they name one; with where the zone's name is.
    SetTimeZone {
        zone: String,
        position: Position,
    },
    /// An ad-hoc query: run over bounded inputs to completion (tests, `vibelux check`).
    Query(Box<Query>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Source,
    Table,
    View,
    Sink,
    Model,
    Alarm,
}

impl ObjectKind {
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Source => "source",
            ObjectKind::Table => "table",
            ObjectKind::View => "view",
            ObjectKind::Sink => "sink",
            ObjectKind::Model => "model",
            ObjectKind::Alarm => "alarm",
        }
    }
}

/// `CREATE SOURCE` (streams) or `CREATE TABLE` (reference data keyed by a primary key).
#[derive(Debug, Clone)]
pub struct CreateSource {
    pub name: Ident,
    pub is_table: bool,
    pub columns: Vec<ColumnDef>,
    /// `temp_c DOUBLE UNIT '°C'`: the unit of a column, by column name as written.
    pub units: Vec<(Ident, String)>,
    pub watermark: Option<WatermarkClause>,
    pub primary_key: Vec<Ident>,
    pub options: Vec<OptionEntry>,
}

/// `WATERMARK FOR column AS column - INTERVAL '…'`.
#[derive(Debug, Clone)]
pub struct WatermarkClause {
    pub column: Ident,
    pub expression: Expr,
    pub position: Position,
}

#[derive(Debug, Clone)]
pub struct CreateView {
    pub name: Ident,
    pub materialized: bool,
    pub or_replace: bool,
    pub query: Box<Query>,
}

#[derive(Debug, Clone)]
pub struct CreateSink {
    pub name: Ident,
    pub from: ObjectName,
    pub options: Vec<OptionEntry>,
}

/// `CREATE [OR REPLACE] MODEL name FROM 'file.onnx' [WITH (…)]`.
#[derive(Debug, Clone)]
pub struct CreateModel {
    pub name: Ident,
    pub or_replace: bool,
    pub path: String,
    pub path_position: Position,
    pub options: Vec<OptionEntry>,
}

/// `CREATE ALARM name ON relation [PER key, …] WHEN condition|STALE [FOR interval]
/// [CLEAR WHEN condition] [CLEAR AFTER interval] [SEVERITY 'level'] [MESSAGE 'template']`.
#[derive(Debug, Clone)]
pub struct CreateAlarm {
    pub name: Ident,
    pub on: Ident,
    pub keys: Vec<Ident>,
    /// `None` for `WHEN STALE`.
    pub raise: Option<Expr>,
    pub on_delay: Option<(Expr, Position)>,
    pub clear: Option<Expr>,
    pub off_delay: Option<(Expr, Position)>,
    pub severity: Option<(String, Position)>,
    pub message: Option<(String, Position)>,
    pub position: Position,
}

/// The options of a statement as a canonical text: keys lowercased and sorted, values as
/// written. Part of a definition's identity, so reordering `WITH (…)` changes nothing.
fn canonical_options(options: &[OptionEntry]) -> String {
    let mut pairs: Vec<(String, &str)> = options
        .iter()
        .map(|entry| (entry.key.value.to_ascii_lowercase(), entry.value.as_str()))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(key, value)| format!("{key}={value:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl CreateSource {
    /// What the statement defines, as a canonical text without positions, comments or layout:
    /// checkpoints recognise an unchanged source by it across edits of the pipeline.
    pub fn definition(&self) -> String {
        let columns: Vec<String> = self.columns.iter().map(ToString::to_string).collect();
        let units: Vec<String> = self
            .units
            .iter()
            .map(|(column, unit)| format!("{}={unit:?}", column.value.to_ascii_lowercase()))
            .collect();
        let watermark = self
            .watermark
            .as_ref()
            .map(|clause| {
                format!(
                    "{} AS {}",
                    clause.column.value.to_ascii_lowercase(),
                    clause.expression
                )
            })
            .unwrap_or_default();
        let key: Vec<String> = self
            .primary_key
            .iter()
            .map(|column| column.value.to_ascii_lowercase())
            .collect();
        format!(
            "{} {} ({}) units ({}) watermark ({watermark}) key ({}) with ({})",
            if self.is_table { "TABLE" } else { "SOURCE" },
            self.name.value.to_ascii_lowercase(),
            columns.join(", "),
            units.join(", "),
            key.join(", "),
            canonical_options(&self.options)
        )
    }
}

impl CreateSink {
    /// Where the sink writes and how, as a canonical text (the view it reads aside): a sink
    /// whose target changed does not resume from the old target's position.
    pub fn definition(&self) -> String {
        format!(
            "SINK {} with ({})",
            self.name.value.to_ascii_lowercase(),
            canonical_options(&self.options)
        )
    }
}

/// `key = 'value'` inside `WITH (…)`.
#[derive(Debug, Clone)]
pub struct OptionEntry {
    pub key: Ident,
    pub value: String,
    pub value_position: Position,
}

/// Parses every statement of `sql`.
pub fn parse_pipeline(sql: &str) -> SqlResult<Vec<Located>> {
    parse_statements(sql).map_err(|mut error| {
        // sqlparser gives no position for a statement cut short: point just past the text.
        if error.position.line == 0 && error.message.ends_with("found: EOF") {
            let line = sql.trim_end().lines().count().max(1) as u64;
            let column = sql
                .trim_end()
                .lines()
                .last()
                .map_or(0, |last| last.chars().count()) as u64
                + 1;
            error.position = Position { line, column };
            error.message = error.message.replace("found: EOF", "found: end of input");
        }
        error
    })
}

/// How deep expressions and queries may nest. Planning recurses through every level (here and
/// in DataFusion), so a statement nested thousands deep, typed by mistake or posted to the API
/// on purpose, would exhaust a thread's stack and abort the engine; found by fuzzing. No
/// pipeline a person writes comes near it.
pub const MAX_NESTING: usize = 32;

fn parse_statements(sql: &str) -> SqlResult<Vec<Located>> {
    crate::nesting::check(sql)?;
    let dialect = VibeluxDialect::default();
    let mut parser = Parser::new(&dialect)
        .with_recursion_limit(MAX_NESTING)
        .try_with_sql(sql)
        .map_err(SqlError::from_parser)?;
    let mut statements = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        if parser.peek_token().token == Token::EOF {
            break;
        }
        statements.push(parse_located(&mut parser, sql)?);
        let next = parser.peek_token();
        if next.token != Token::SemiColon && next.token != Token::EOF {
            return Err(expected("`;` after the statement", &next));
        }
    }
    Ok(statements)
}

fn parse_located(parser: &mut Parser, sql: &str) -> SqlResult<Located> {
    let start = parser.peek_token().span.start;
    let statement = parse_statement(parser, sql)?;
    let end = parser.peek_token().span.start;
    Ok(Located {
        statement,
        position: Position::of(start),
        text: slice_text(sql, start, end),
    })
}

/// The source text between two token locations.
fn slice_text(
    sql: &str,
    start: datafusion::sql::sqlparser::tokenizer::Location,
    end: datafusion::sql::sqlparser::tokenizer::Location,
) -> String {
    let offset = |location: datafusion::sql::sqlparser::tokenizer::Location| {
        if location.line == 0 {
            return sql.len();
        }
        let line_start: usize = sql
            .split_inclusive('\n')
            .take(location.line as usize - 1)
            .map(str::len)
            .sum();
        let column_bytes: usize = sql[line_start..]
            .chars()
            .take(location.column as usize - 1)
            .map(char::len_utf8)
            .sum();
        (line_start + column_bytes).min(sql.len())
    };
    let (from, to) = (offset(start), offset(end));
    sql.get(from..to.max(from))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn expected(what: &str, found: &TokenWithSpan) -> SqlError {
    let found_text = match &found.token {
        Token::EOF => "end of input".to_string(),
        token => format!("`{token}`"),
    };
    SqlError::new(
        Position::of(found.span.start),
        format!("expected {what}, found {found_text}"),
    )
}

/// True (and consumed) when the next token is the bare word `word`, keyword or not.
fn parse_word(parser: &mut Parser, word: &str) -> bool {
    let matches = matches!(&parser.peek_token().token,
        Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word));
    if matches {
        parser.next_token();
    }
    matches
}

fn parse_statement(parser: &mut Parser, sql: &str) -> SqlResult<Statement> {
    if parse_word(parser, "CREATE") {
        let or_replace = parser.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
        if parse_word(parser, "SOURCE") {
            return parse_create_source(parser, false)
                .map(|source| Statement::CreateSource(Box::new(source)));
        }
        if parse_word(parser, "TABLE") {
            return parse_create_source(parser, true)
                .map(|source| Statement::CreateSource(Box::new(source)));
        }
        let materialized = parse_word(parser, "MATERIALIZED");
        if parse_word(parser, "VIEW") {
            let name = parsing(parser.parse_identifier())?;
            if !parse_word(parser, "AS") {
                return Err(expected("AS", &parser.peek_token()));
            }
            let query = parsing(parser.parse_query())?;
            return Ok(Statement::CreateView(CreateView {
                name,
                materialized,
                or_replace,
                query,
            }));
        }
        if !materialized && parse_word(parser, "SINK") {
            let name = parsing(parser.parse_identifier())?;
            if !parse_word(parser, "FROM") {
                return Err(expected("FROM and the view to sink", &parser.peek_token()));
            }
            let from = parsing(parser.parse_object_name(false))?;
            let options = parse_with_options(parser)?;
            return Ok(Statement::CreateSink(CreateSink {
                name,
                from,
                options,
            }));
        }
        if !materialized && parse_word(parser, "ALARM") {
            return parse_create_alarm(parser).map(|alarm| Statement::CreateAlarm(Box::new(alarm)));
        }
        if !materialized && parse_word(parser, "MODEL") {
            let name = parsing(parser.parse_identifier())?;
            if !parse_word(parser, "FROM") {
                return Err(expected(
                    "FROM and the model file ('….onnx')",
                    &parser.peek_token(),
                ));
            }
            let path_token = parser.peek_token();
            let path = match parsing(parser.parse_value())?.value {
                Value::SingleQuotedString(text) | Value::DoubleQuotedString(text) => text,
                _ => return Err(expected("the model file as a quoted string", &path_token)),
            };
            let options = parse_with_options(parser)?;
            return Ok(Statement::CreateModel(CreateModel {
                name,
                or_replace,
                path,
                path_position: Position::of(path_token.span.start),
                options,
            }));
        }
        return Err(expected(
            "SOURCE, TABLE, VIEW, MATERIALIZED VIEW, SINK, MODEL or ALARM after CREATE",
            &parser.peek_token(),
        ));
    }
    if parse_word(parser, "DROP") {
        let kind = parse_object_kind(parser)?;
        let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let name = parsing(parser.parse_identifier())?;
        return Ok(Statement::Drop {
            kind,
            name,
            if_exists,
        });
    }
    if parse_word(parser, "SHOW") {
        for (plural, kind) in [
            ("SOURCES", ObjectKind::Source),
            ("TABLES", ObjectKind::Table),
            ("VIEWS", ObjectKind::View),
            ("SINKS", ObjectKind::Sink),
            ("MODELS", ObjectKind::Model),
            ("ALARMS", ObjectKind::Alarm),
        ] {
            if parse_word(parser, plural) {
                return Ok(Statement::Show(kind));
            }
        }
        return Err(expected(
            "SOURCES, TABLES, VIEWS, SINKS, MODELS or ALARMS after SHOW",
            &parser.peek_token(),
        ));
    }
    if parse_word(parser, "EXPLAIN") {
        return Ok(Statement::Explain(Box::new(parse_located(parser, sql)?)));
    }
    if parse_word(parser, "SET") {
        if !(parse_word(parser, "TIME") && parse_word(parser, "ZONE")) {
            return Err(expected("TIME ZONE after SET", &parser.peek_token()));
        }
        let token = parser.next_token();
        let position = Position::of(token.span.start);
        return match &token.token {
            Token::SingleQuotedString(zone) => Ok(Statement::SetTimeZone {
                zone: zone.clone(),
                position,
            }),
            Token::Word(word) if word.value.eq_ignore_ascii_case("UTC") => {
                Ok(Statement::SetTimeZone {
                    zone: "UTC".to_string(),
                    position,
                })
            }
            _ => Err(expected(
                "a time zone name in quotes ('Europe/Amsterdam')",
                &token,
            )),
        };
    }
    let next = parser.peek_token();
    let starts_query = matches!(&next.token, Token::LParen)
        || matches!(&next.token, Token::Word(w) if matches!(w.keyword, Keyword::SELECT | Keyword::WITH | Keyword::VALUES));
    if starts_query {
        return parsing(parser.parse_query()).map(Statement::Query);
    }
    Err(expected("CREATE, DROP, SHOW, EXPLAIN or a query", &next))
}

fn parse_object_kind(parser: &mut Parser) -> SqlResult<ObjectKind> {
    if parse_word(parser, "SOURCE") {
        Ok(ObjectKind::Source)
    } else if parse_word(parser, "TABLE") {
        Ok(ObjectKind::Table)
    } else if parse_word(parser, "SINK") {
        Ok(ObjectKind::Sink)
    } else if parse_word(parser, "MODEL") {
        Ok(ObjectKind::Model)
    } else if parse_word(parser, "ALARM") {
        Ok(ObjectKind::Alarm)
    } else if parse_word(parser, "MATERIALIZED") || parse_word(parser, "VIEW") {
        parse_word(parser, "VIEW");
        Ok(ObjectKind::View)
    } else {
        Err(expected(
            "SOURCE, TABLE, VIEW, SINK, MODEL or ALARM",
            &parser.peek_token(),
        ))
    }
}

fn parse_quoted(parser: &mut Parser, what: &str) -> SqlResult<(String, Position)> {
    let token = parser.peek_token();
    match parsing(parser.parse_value())?.value {
        Value::SingleQuotedString(text) | Value::DoubleQuotedString(text) => {
            Ok((text, Position::of(token.span.start)))
        }
        _ => Err(expected(what, &token)),
    }
}

fn parse_create_alarm(parser: &mut Parser) -> SqlResult<CreateAlarm> {
    let position = Position::of(parser.peek_token().span.start);
    let name = parsing(parser.parse_identifier())?;
    if !parse_word(parser, "ON") {
        return Err(expected("ON and the view to watch", &parser.peek_token()));
    }
    let on = parsing(parser.parse_identifier())?;
    let mut keys = Vec::new();
    if parse_word(parser, "PER") {
        loop {
            keys.push(parsing(parser.parse_identifier())?);
            if !parser.consume_token(&Token::Comma) {
                break;
            }
        }
    }
    if !parse_word(parser, "WHEN") {
        return Err(expected(
            "WHEN and the condition that raises the alarm (or WHEN STALE)",
            &parser.peek_token(),
        ));
    }
    let raise = if parse_word(parser, "STALE") {
        None
    } else {
        Some(parsing(parser.parse_expr())?)
    };
    let mut alarm = CreateAlarm {
        name,
        on,
        keys,
        raise,
        on_delay: None,
        clear: None,
        off_delay: None,
        severity: None,
        message: None,
        position,
    };
    let interval = |parser: &mut Parser| -> SqlResult<(Expr, Position)> {
        let at = Position::of(parser.peek_token().span.start);
        Ok((parsing(parser.parse_expr())?, at))
    };
    loop {
        if parser.parse_keyword(Keyword::FOR) {
            alarm.on_delay = Some(interval(parser)?);
        } else if parse_word(parser, "CLEAR") {
            if parse_word(parser, "WHEN") {
                alarm.clear = Some(parsing(parser.parse_expr())?);
            } else if parse_word(parser, "AFTER") {
                alarm.off_delay = Some(interval(parser)?);
            } else {
                return Err(expected("WHEN or AFTER after CLEAR", &parser.peek_token()));
            }
        } else if parse_word(parser, "SEVERITY") {
            alarm.severity = Some(parse_quoted(parser, "the severity, quoted: 'high'")?);
        } else if parse_word(parser, "MESSAGE") {
            alarm.message = Some(parse_quoted(parser, "the message, quoted")?);
        } else {
            break;
        }
    }
    Ok(alarm)
}

fn parse_with_options(parser: &mut Parser) -> SqlResult<Vec<OptionEntry>> {
    if !parse_word(parser, "WITH") {
        return Ok(Vec::new());
    }
    let open = parser.peek_token();
    if !parser.consume_token(&Token::LParen) {
        return Err(expected("`(` after WITH", &open));
    }
    let mut options = Vec::new();
    loop {
        let mut key = parsing(parser.parse_identifier())?;
        // Dotted names pass settings through to a client: `properties.security.protocol`.
        while parser.consume_token(&Token::Period) {
            let part = parsing(parser.parse_identifier())?;
            key.value = format!("{}.{}", key.value, part.value);
        }
        let equals = parser.peek_token();
        if !parser.consume_token(&Token::Eq) {
            return Err(expected(
                &format!("`=` after option `{}`", key.value),
                &equals,
            ));
        }
        let value_token = parser.peek_token();
        let value = match parsing(parser.parse_value())?.value {
            Value::SingleQuotedString(text) | Value::DoubleQuotedString(text) => text,
            Value::Number(number, _) => number.to_string(),
            Value::Boolean(flag) => flag.to_string(),
            other => {
                return Err(SqlError::new(
                    Position::of(value_token.span.start),
                    format!(
                        "option `{}` takes a quoted string, found {other}",
                        key.value
                    ),
                ));
            }
        };
        options.push(OptionEntry {
            key,
            value,
            value_position: Position::of(value_token.span.start),
        });
        if parser.consume_token(&Token::Comma) {
            continue;
        }
        let close = parser.peek_token();
        if parser.consume_token(&Token::RParen) {
            break;
        }
        return Err(expected("`,` or `)` in WITH options", &close));
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_with_a_watermark_and_options_parses() {
        let statements = parse_pipeline(
            "-- readings\nCREATE SOURCE readings (sensor_id TEXT NOT NULL, ts TIMESTAMP,\n  WATERMARK FOR ts AS ts - INTERVAL '5 seconds'\n) WITH (connector = 'simulator', rooms = 4);",
        )
        .unwrap();
        let Statement::CreateSource(source) = &statements[0].statement else {
            panic!()
        };
        assert_eq!(statements[0].position, Position { line: 2, column: 1 });
        assert_eq!(source.columns.len(), 2);
        assert_eq!(source.watermark.as_ref().unwrap().column.value, "ts");
        assert_eq!(source.options[1].value, "4");
        assert!(statements[0].text.starts_with("CREATE SOURCE readings"));
    }

    #[test]
    fn columns_may_name_their_unit() {
        let statements = parse_pipeline(
            "CREATE SOURCE r (temp_c DOUBLE NOT NULL UNIT '°C', rh DOUBLE, ts TIMESTAMP, WATERMARK FOR ts AS ts)",
        )
        .unwrap();
        let Statement::CreateSource(source) = &statements[0].statement else {
            panic!()
        };
        assert_eq!(source.columns.len(), 3);
        assert_eq!(source.units.len(), 1);
        assert_eq!(
            (source.units[0].0.value.as_str(), source.units[0].1.as_str()),
            ("temp_c", "°C")
        );
        let error =
            parse_pipeline("CREATE SOURCE r (temp_c DOUBLE UNIT, ts TIMESTAMP)").unwrap_err();
        assert!(error.to_string().contains("1:36"), "{error}");
    }

    #[test]
    fn views_sinks_and_show_parse_in_sequence() {
        let statements = parse_pipeline(
            "CREATE VIEW v AS SELECT 1; CREATE MATERIALIZED VIEW m AS SELECT * FROM v;\nCREATE SINK s FROM m WITH (connector='stdout'); SHOW VIEWS; DROP SINK IF EXISTS s; EXPLAIN SELECT 1",
        )
        .unwrap();
        assert_eq!(statements.len(), 6);
        assert!(matches!(&statements[1].statement, Statement::CreateView(v) if v.materialized));
        assert!(matches!(&statements[5].statement, Statement::Explain(_)));
    }

    #[test]
    fn a_typo_is_reported_where_it_is() {
        let error =
            parse_pipeline("CREATE VIEW v AS SELECT 1;\nCREATE SINKS s FROM v;").unwrap_err();
        assert_eq!(error.position, Position { line: 2, column: 8 });
        assert!(
            error.message.contains("expected SOURCE, TABLE, VIEW"),
            "{}",
            error.message
        );
        let error = parse_pipeline("SELECT a FROM b c d").unwrap_err();
        assert_eq!(
            error.position,
            Position {
                line: 1,
                column: 19
            }
        );
    }
}
