//! What DataFusion's SQL planner sees: our relations as tables, DataFusion's function library.
//!
//! Planning is synchronous and needs no data, so instead of a `SessionContext` (async, and built
//! around executing) the planner gets this small [`ContextProvider`] over the catalog's schemas.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::common::config::ConfigOptions;
use datafusion::common::{DFSchema, ScalarValue, TableReference};
use datafusion::execution::SessionState;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::planner::{ContextProvider, ExprPlanner, TypePlanner};
use datafusion::logical_expr::{
    AggregateUDF, Expr, HigherOrderUDF, LogicalTableSource, ScalarUDF, TableSource, WindowUDF,
};
use datafusion::sql::planner::{ParserOptions, PlannerContext, SqlToRel};
use datafusion::sql::sqlparser::ast;

use vibelux_models::onnx::ModelRegistry;

use crate::error::{Position, SqlError, SqlResult};

/// DataFusion's function library with Vibelux's own functions, and settings, shared by every
/// statement.
pub fn session_state(models: &Arc<ModelRegistry>) -> SessionState {
    use datafusion::execution::FunctionRegistry as _;
    let mut state = SessionStateBuilder::new().with_default_features().build();
    for function in crate::functions::cultivation_functions() {
        // Replacing is not possible: these names are not DataFusion's.
        let _ = state.register_udf(function);
    }
    for function in crate::time_weighted::time_weighted_functions() {
        let _ = state.register_udaf(function);
    }
    let _ = state.register_udwf(crate::functions::anomaly_score_function());
    for function in crate::models::predict_functions(models) {
        let _ = state.register_udf(function);
    }
    let _ = state.register_udaf(crate::models::population_stability_function());
    register_json_functions(&mut state);
    state
}

/// `json_get_str`, `json_get_float`, `->>` and the rest over JSON text, with the rewrite of a
/// cast `json_get` to its typed form (`json_get(meta, 'fw')::int` is `json_get_int`).
fn register_json_functions(registry: &mut dyn datafusion::execution::FunctionRegistry) {
    datafusion_functions_json::register_all(registry)
        .expect("DataFusion's registries take the JSON functions");
}

/// Adds the cultivation functions and the time-weighted aggregates to a session that runs
/// ad-hoc queries (`vibelux query` over the warehouse, the Postgres port): the functions that
/// only streaming views compute (`anomaly_score`, model predictions) are left out.
pub fn register_query_functions(context: &datafusion::prelude::SessionContext) {
    for function in crate::functions::cultivation_functions() {
        context.register_udf(function.as_ref().clone());
    }
    for function in crate::time_weighted::time_weighted_functions() {
        context.register_udaf(function.as_ref().clone());
    }
    let state = context.state_ref();
    register_json_functions(&mut *state.write());
}

/// Relations visible to one statement.
pub struct PlanningContext<'a> {
    pub state: &'a SessionState,
    pub tables: HashMap<String, SchemaRef>,
}

impl PlanningContext<'_> {
    pub fn sql_to_rel(&self) -> SqlToRel<'_, Self> {
        let options = ParserOptions {
            collect_spans: true,
            ..ParserOptions::default()
        };
        SqlToRel::new_with_options(self, options)
    }
}

impl ContextProvider for PlanningContext<'_> {
    fn get_table_source(
        &self,
        name: TableReference,
    ) -> datafusion::common::Result<Arc<dyn TableSource>> {
        let table = name.table().to_string();
        match self.tables.get(&table) {
            Some(schema) => Ok(Arc::new(LogicalTableSource::new(schema.clone()))),
            None => {
                let mut known: Vec<&str> = self
                    .tables
                    .keys()
                    .map(String::as_str)
                    .filter(|name| !name.starts_with("__"))
                    .collect();
                known.sort_unstable();
                datafusion::common::plan_err!(
                    "unknown relation `{table}`; defined so far: {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )
            }
        }
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        self.state.expr_planners()
    }

    fn get_type_planner(&self) -> Option<Arc<dyn TypePlanner>> {
        None
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.state.scalar_functions().get(name).cloned()
    }

    fn get_higher_order_meta(&self, name: &str) -> Option<Arc<HigherOrderUDF>> {
        self.state.higher_order_functions().get(name).cloned()
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.state.aggregate_functions().get(name).cloned()
    }

    fn get_window_meta(&self, name: &str) -> Option<Arc<WindowUDF>> {
        self.state.window_functions().get(name).cloned()
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        self.state.config_options()
    }

    fn udf_names(&self) -> Vec<String> {
        self.state.scalar_functions().keys().cloned().collect()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        self.state
            .higher_order_functions()
            .keys()
            .cloned()
            .collect()
    }

    fn udaf_names(&self) -> Vec<String> {
        self.state.aggregate_functions().keys().cloned().collect()
    }

    fn udwf_names(&self) -> Vec<String> {
        self.state.window_functions().keys().cloned().collect()
    }
}

/// Converts a DataFusion error into a located SQL error (DataFusion knows spans for some errors).
pub fn located(error: datafusion::error::DataFusionError, fallback: Position) -> SqlError {
    let position = error
        .diagnostic()
        .and_then(|diagnostic| diagnostic.span)
        .map(|span| Position::of_diagnostic(span.start))
        .filter(|position| position.line > 0)
        .unwrap_or(fallback);
    let message = error.find_root().to_string();
    let message = message
        .strip_prefix("Error during planning: ")
        .or_else(|| message.strip_prefix("Schema error: "))
        .or_else(|| message.strip_prefix("This feature is not implemented: "))
        .unwrap_or(&message)
        .to_string();
    SqlError::new(position, message)
}

/// The Arrow type of a declared column type.
pub fn column_type(data_type: &ast::DataType, position: Position) -> SqlResult<DataType> {
    let text = data_type.to_string().to_ascii_uppercase();
    let base = text.split(['(', ' ']).next().unwrap_or_default();
    Ok(match base {
        "TEXT" | "VARCHAR" | "STRING" | "CHAR" | "CHARACTER" | "JSON" | "JSONB" => DataType::Utf8,
        "INT" | "INTEGER" | "BIGINT" | "SMALLINT" | "TINYINT" | "INT2" | "INT4" | "INT8"
        | "INT64" => DataType::Int64,
        "DOUBLE" | "FLOAT" | "REAL" | "FLOAT4" | "FLOAT8" | "FLOAT64" => DataType::Float64,
        "DECIMAL" | "NUMERIC" | "DEC" => decimal_type(&text, position)?,
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "TIMESTAMPTZ" => DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        "TIMESTAMP" if text.contains("WITH TIME ZONE") && !text.contains("WITHOUT") => {
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
        }
        "TIMESTAMP" => DataType::Timestamp(TimeUnit::Nanosecond, None),
        "DATE" => DataType::Date32,
        "INTERVAL" => DataType::Duration(TimeUnit::Nanosecond),
        _ => {
            return Err(SqlError::new(
                position,
                format!(
                    "column type {data_type} is not supported; use TEXT, BIGINT, DOUBLE, DECIMAL(p, s), BOOLEAN, TIMESTAMP, DATE, INTERVAL or JSON"
                ),
            ));
        }
    })
}

/// `DECIMAL(p, s)`, `DECIMAL(p)` (no digits after the point) or `DECIMAL` (DataFusion's
/// DECIMAL(38, 10)): exact, as Arrow's `Decimal128`.
fn decimal_type(text: &str, position: Position) -> SqlResult<DataType> {
    let arguments: Vec<&str> = text
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .map(|inside| inside.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let number = |text: &str| text.parse::<u8>().ok();
    let (precision, scale) = match arguments.as_slice() {
        [] => (38, 10),
        [precision] => (number(precision).unwrap_or(0), 0),
        [precision, scale] => (
            number(precision).unwrap_or(0),
            number(scale).unwrap_or(u8::MAX),
        ),
        _ => (0, 0),
    };
    if !(1..=38).contains(&precision) || scale > precision {
        return Err(SqlError::new(
            position,
            format!(
                "column type {text}: a DECIMAL has a precision of 1 to 38 digits and a scale (digits after \
                 the point) of 0 up to the precision, such as DECIMAL(10, 2)"
            ),
        ));
    }
    Ok(DataType::Decimal128(precision, scale as i8))
}

/// Whether a declared column type is `JSON` (text holding a JSON document).
pub fn is_json_type(data_type: &ast::DataType) -> bool {
    matches!(data_type, ast::DataType::JSON | ast::DataType::JSONB)
}

/// The length of a constant interval expression (`INTERVAL '1 minute'`) in nanoseconds.
pub fn interval_nanos(
    context: &PlanningContext,
    expression: &ast::Expr,
    position: Position,
) -> SqlResult<i64> {
    let planned = context
        .sql_to_rel()
        .sql_to_expr(
            expression.clone(),
            &DFSchema::empty(),
            &mut PlannerContext::new(),
        )
        .map_err(|error| located(error, position))?;
    let refuse = |what: &str| {
        SqlError::new(
            position,
            format!("expected a constant interval such as INTERVAL '1 minute', found {what}"),
        )
    };
    let nanos = match planned {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(value)), _) => {
            if value.months != 0 {
                return Err(SqlError::new(
                    position,
                    "intervals in months have no fixed length; use days",
                ));
            }
            i64::from(value.days) * 86_400_000_000_000 + value.nanoseconds
        }
        Expr::Literal(ScalarValue::IntervalDayTime(Some(value)), _) => {
            i64::from(value.days) * 86_400_000_000_000 + i64::from(value.milliseconds) * 1_000_000
        }
        other => return Err(refuse(&other.to_string())),
    };
    if nanos <= 0 {
        return Err(SqlError::new(position, "the interval must be positive"));
    }
    Ok(nanos)
}

#[cfg(test)]
mod tests {
    /// `vibelux query` reads JSON text in the warehouse with the same functions as views.
    #[tokio::test]
    async fn ad_hoc_queries_read_json_text_with_the_json_functions() {
        let context = datafusion::prelude::SessionContext::new();
        super::register_query_functions(&context);
        let batches = context
            .sql(
                r#"SELECT json_get_str(meta, 'fw') AS fw, meta->>'tags' AS tags,
                          json_get(meta, 'offset')::double AS offset
                   FROM (VALUES ('{"fw": "1.2", "tags": [1], "offset": 0.5}')) AS t(meta)"#,
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let shown = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(shown.contains("| 1.2 | [1]  | 0.5    |"), "{shown}");
    }
}
