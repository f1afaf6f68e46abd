//! `JOIN versions FOR SYSTEM_TIME AS OF r.ts AS v ON …`: a stream's rows joined with the
//! version of a versioned table valid at each row's event time (Flink's event-time temporal
//! join).
//!
//! DataFusion ignores a table's version clause, so before planning each read of a table as of a
//! time is replaced by a reference to a synthetic relation `__as_of_N` (aliased as the table, so
//! its columns keep their names) that stands for the table's versions, and the time is noted.
//! Lowering finds the synthetic relation on a join's side and plans an as-of join
//! (`lowering/as_of_join.rs`); read anywhere else it is refused.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, Ident, ObjectName, Query, TableAlias, TableFactor, TableVersion, VisitMut, VisitorMut,
};

use crate::error::{Position, SqlError};

/// One `table FOR SYSTEM_TIME AS OF time` found in a query.
#[derive(Debug, Clone)]
pub struct AsOfRead {
    /// The synthetic relation name the read was replaced by.
    pub relation: String,
    pub table: String,
    /// The time the table is read as of: the other side's event-time column.
    pub time: Expr,
    pub position: Position,
}

/// Replaces reads of tables as of a time in `query`; names synthetic relations from `next_id`
/// on.
pub fn rewrite_as_of_reads(
    query: &mut Query,
    next_id: &mut usize,
) -> Result<Vec<AsOfRead>, SqlError> {
    let mut rewriter = Rewriter {
        reads: Vec::new(),
        next_id,
    };
    match query.visit(&mut rewriter) {
        ControlFlow::Break(error) => Err(error),
        ControlFlow::Continue(()) => Ok(rewriter.reads),
    }
}

struct Rewriter<'a> {
    reads: Vec<AsOfRead>,
    next_id: &'a mut usize,
}

impl VisitorMut for Rewriter<'_> {
    type Break = SqlError;

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<SqlError> {
        let TableFactor::Table {
            name,
            alias,
            version: version @ Some(_),
            ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let table = name
            .0
            .last()
            .and_then(|part| part.as_ident())
            .cloned()
            .unwrap_or_else(|| Ident::new(name.to_string()));
        let position = Position::of(table.span.start);
        let Some(TableVersion::ForSystemTimeAsOf(time)) = version.take() else {
            return ControlFlow::Break(SqlError::new(
                position,
                format!(
                    "`{}` is read as of a time with FOR SYSTEM_TIME AS OF <the other side's event time> only",
                    table.value
                ),
            ));
        };
        let relation = format!("__as_of_{}", *self.next_id);
        *self.next_id += 1;
        self.reads.push(AsOfRead {
            relation: relation.clone(),
            table: table.value.to_ascii_lowercase(),
            time,
            position,
        });
        *name = ObjectName::from(vec![Ident::new(relation)]);
        if alias.is_none() {
            *alias = Some(TableAlias {
                explicit: true,
                name: table,
                columns: Vec::new(),
                at: None,
            });
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::ast::Statement;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;
    use crate::parser::VibeluxDialect;

    fn query(sql: &str) -> Query {
        match Parser::parse_sql(&VibeluxDialect::default(), sql)
            .unwrap()
            .remove(0)
        {
            Statement::Query(query) => *query,
            other => panic!("not a query: {other}"),
        }
    }

    #[test]
    fn a_read_as_of_a_time_becomes_a_synthetic_relation_aliased_as_the_table() {
        let mut query = query(
            "SELECT * FROM readings r JOIN setpoints FOR SYSTEM_TIME AS OF r.ts ON r.zone = setpoints.zone",
        );
        let mut next = 3;
        let reads = rewrite_as_of_reads(&mut query, &mut next).unwrap();
        assert_eq!(reads.len(), 1);
        assert_eq!(reads[0].relation, "__as_of_3");
        assert_eq!(reads[0].table, "setpoints");
        assert_eq!(reads[0].time.to_string(), "r.ts");
        assert_eq!(next, 4);
        assert_eq!(
            query.to_string(),
            "SELECT * FROM readings r JOIN __as_of_3 AS setpoints ON r.zone = setpoints.zone"
        );
    }

    #[test]
    fn other_version_clauses_are_refused_with_the_one_that_works() {
        let mut query = query("SELECT * FROM setpoints VERSION AS OF 3");
        let error = rewrite_as_of_reads(&mut query, &mut 0).unwrap_err();
        assert!(
            error.to_string().contains("FOR SYSTEM_TIME AS OF"),
            "{error}"
        );
    }
}
