//! `TUMBLE(relation, time_column, size [, offset] [, 'time zone'])`, `HOP(relation, time_column,
//! slide, size [, offset] [, 'time zone'])` and `SESSION(relation, time_column, gap)` in `FROM`.
//! An offset moves every window by that much from the grid (RisingWave's convention): a grower's
//! day that starts at 06:00 UTC is `TUMBLE(readings, ts, INTERVAL '1 day', INTERVAL '6 hours')`.
//! A time zone lays the windows out on that zone's clock, so a day starts at local midnight and
//! lasts 23 or 25 hours when the clocks change: `TUMBLE(readings, ts, INTERVAL '1 day',
//! 'Europe/Amsterdam')`.
//!
//! DataFusion has no streaming window table functions, so before planning each call is replaced
//! by a reference to a synthetic relation `__window_N` whose schema is the input's plus
//! `window_start` and `window_end`. The planner registers that relation and lowers it to a
//! window-assignment node over the input (see `operators/src/window.rs`).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, Ident, ObjectName, Query, TableAlias, TableFactor, Value,
    VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::tokenizer::Span;

use crate::error::{Position, SqlError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowFunction {
    Tumble,
    Hop,
    Session,
}

/// One window function call found in a query.
#[derive(Debug, Clone)]
pub struct WindowCall {
    pub function: WindowFunction,
    /// The synthetic relation name the call was replaced by.
    pub relation: String,
    pub input: String,
    pub time_column: Ident,
    /// `[size]` for TUMBLE, `[slide, size]` for HOP, `[gap]` for SESSION; then the offset, if
    /// given.
    pub intervals: Vec<Expr>,
    /// The time zone's name, where it was written.
    pub zone: Option<(String, Position)>,
    pub position: Position,
}

/// Replaces window function calls in `query`; names synthetic relations from `next_id` on.
pub fn rewrite_window_calls(
    query: &mut Query,
    next_id: &mut usize,
) -> Result<Vec<WindowCall>, SqlError> {
    let mut rewriter = Rewriter {
        calls: Vec::new(),
        next_id,
    };
    match query.visit(&mut rewriter) {
        ControlFlow::Break(error) => Err(error),
        ControlFlow::Continue(()) => Ok(rewriter.calls),
    }
}

struct Rewriter<'a> {
    calls: Vec<WindowCall>,
    next_id: &'a mut usize,
}

fn start_of(span: Span) -> Position {
    Position::of(span.start)
}

fn plain_expression(argument: &FunctionArg) -> Option<&Expr> {
    match argument {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(expr)) => Some(expr),
        FunctionArg::Named {
            arg: FunctionArgExpr::Expr(expr),
            ..
        } => Some(expr),
        _ => None,
    }
}

/// A relation or column given by name: `climate`, `TABLE climate`, `DESCRIPTOR(ts)`.
fn name_of(expr: &Expr) -> Option<Ident> {
    match expr {
        Expr::Identifier(ident) => Some(ident.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().cloned(),
        Expr::Function(function)
            if function.name.to_string().eq_ignore_ascii_case("descriptor") =>
        {
            match &function.args {
                datafusion::sql::sqlparser::ast::FunctionArguments::List(list) => list
                    .args
                    .first()
                    .and_then(plain_expression)
                    .and_then(name_of),
                _ => None,
            }
        }
        _ => None,
    }
}

impl VisitorMut for Rewriter<'_> {
    type Break = SqlError;

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<SqlError> {
        let TableFactor::Table {
            name,
            alias,
            args: Some(arguments),
            ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let function_name = name.to_string().to_ascii_lowercase();
        // The argument counts it takes, the second with an offset.
        let (function, expected) = match function_name.as_str() {
            "tumble" => (WindowFunction::Tumble, [3, 4]),
            "hop" => (WindowFunction::Hop, [4, 5]),
            "session" => (WindowFunction::Session, [3, 3]),
            _ => return ControlFlow::Continue(()),
        };
        let position = name
            .0
            .first()
            .and_then(|part| part.as_ident())
            .map_or(Position::default(), |ident| start_of(ident.span));
        let usage = match function {
            WindowFunction::Tumble => {
                "TUMBLE(relation, time_column, INTERVAL 'size' [, INTERVAL 'offset'] [, 'time zone'])"
            }
            WindowFunction::Hop => {
                "HOP(relation, time_column, INTERVAL 'slide', INTERVAL 'size' [, INTERVAL 'offset'] [, 'time zone'])"
            }
            WindowFunction::Session => "SESSION(relation, time_column, INTERVAL 'gap')",
        };
        let usage_error =
            || ControlFlow::Break(SqlError::new(position, format!("expected {usage}")));
        let Some(mut expressions) = arguments
            .args
            .iter()
            .map(plain_expression)
            .collect::<Option<Vec<&Expr>>>()
        else {
            return usage_error();
        };
        // A text literal last is the time zone (not for sessions, which follow the rows).
        let zone = match expressions.last() {
            Some(Expr::Value(value)) if function != WindowFunction::Session => match &value.value {
                Value::SingleQuotedString(name) => Some((name.clone(), start_of(value.span))),
                _ => None,
            },
            _ => None,
        };
        if zone.is_some() {
            expressions.pop();
        }
        if !expected.contains(&expressions.len()) {
            return usage_error();
        }
        let Some(input) = name_of(expressions[0]) else {
            return ControlFlow::Break(SqlError::new(
                position,
                format!("the first argument of {usage} names a source or view"),
            ));
        };
        let Some(time_column) = name_of(expressions[1]) else {
            return ControlFlow::Break(SqlError::new(
                position,
                format!("the second argument of {usage} names a time column"),
            ));
        };
        let relation = format!("__window_{}", *self.next_id);
        *self.next_id += 1;
        self.calls.push(WindowCall {
            function,
            relation: relation.clone(),
            input: input.value.to_ascii_lowercase(),
            time_column,
            intervals: expressions[2..]
                .iter()
                .map(|expr| (*expr).clone())
                .collect(),
            zone,
            position,
        });
        *name = ObjectName::from(vec![Ident::new(relation)]);
        if alias.is_none() {
            *alias = Some(TableAlias {
                explicit: true,
                name: input,
                columns: Vec::new(),
                at: None,
            });
        }
        if let TableFactor::Table { args, .. } = factor {
            *args = None;
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::{Statement, parse_pipeline};

    #[test]
    fn tumble_becomes_a_synthetic_relation_aliased_as_its_input() {
        let statements = parse_pipeline(
            "SELECT zone, window_start FROM TUMBLE(climate, ts, INTERVAL '1 minute') GROUP BY zone, window_start",
        )
        .unwrap();
        let Statement::Query(mut query) = statements[0].statement.clone() else {
            panic!()
        };
        let mut next = 0;
        let calls = rewrite_window_calls(&mut query, &mut next).unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].input, "climate");
        assert_eq!(calls[0].time_column.value, "ts");
        assert!(
            query.to_string().contains("FROM __window_0 AS climate"),
            "{query}"
        );
    }

    #[test]
    fn a_hop_with_missing_arguments_says_how_to_call_it() {
        let statements =
            parse_pipeline("SELECT * FROM HOP(climate, ts, INTERVAL '1 minute')").unwrap();
        let Statement::Query(mut query) = statements[0].statement.clone() else {
            panic!()
        };
        let error = rewrite_window_calls(&mut query, &mut 0).unwrap_err();
        assert!(error.message.contains(
            "HOP(relation, time_column, INTERVAL 'slide', INTERVAL 'size' [, INTERVAL 'offset'] \
             [, 'time zone'])"
        ));
        assert_eq!(error.position.column, 15);
    }

    #[test]
    fn a_text_last_is_the_time_zone_and_the_intervals_come_before_it() {
        let statements = parse_pipeline(
            "SELECT * FROM TUMBLE(climate, ts, INTERVAL '1 day', INTERVAL '6 hours', 'Europe/Amsterdam')",
        )
        .unwrap();
        let Statement::Query(mut query) = statements[0].statement.clone() else {
            panic!()
        };
        let calls = rewrite_window_calls(&mut query, &mut 0).unwrap();
        assert_eq!(calls[0].intervals.len(), 2);
        let (zone, at) = calls[0].zone.clone().unwrap();
        assert_eq!(zone, "Europe/Amsterdam");
        assert_eq!(at.column, 73);
    }
}
