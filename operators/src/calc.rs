//! Filters and projections, evaluated by DataFusion physical expressions.
//!
//! A `WHERE` followed by a `SELECT` list is fused into one [`Calc`] (the name Calcite gives the
//! same node) so each batch of rows crosses into Arrow once. Both append-only streams and update
//! streams can be mapped: updates keep their time and diff.
//!
//! A row on which an expression fails (an integer divided by zero, `'x'` cast to a timestamp) is
//! not dropped in silence: it leaves on a second stream as an error row — the expression, the
//! error, the input row as JSON — which the planner exposes as the view's `<view>_errors`. The
//! failures are counted, and logged as a summary at most every few seconds, never a line a row.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::DataFusionError;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::utils::collect_columns;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;

use crate::columnar::{append_column, rows_to_batch_columns};
use crate::row::{Datum, Row, Update, format_date, format_duration, format_timestamp};

/// Failures are logged as a summary at most this often.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// What a Calc computes, in the user's words, for error rows and logs.
#[derive(Debug, Clone, Default)]
pub struct CalcDescription {
    /// The view the Calc belongs to.
    pub view: String,
    /// The `WHERE` condition as written, if there is one.
    pub predicate: Option<String>,
    /// Each projection as written.
    pub projections: Vec<String>,
}

/// Failures since the last summary was logged.
#[derive(Debug)]
struct FailureLog {
    last_logged: Option<Instant>,
    unlogged: u64,
}

/// A fused filter and projection over rows of `input_schema`.
#[derive(Debug)]
pub struct Calc {
    pub input_schema: SchemaRef,
    pub predicate: Option<Arc<dyn PhysicalExpr>>,
    pub projections: Vec<Arc<dyn PhysicalExpr>>,
    /// Rows whose evaluation failed (a cast that cannot succeed, say): counted, logged in
    /// summary, and sent to the error stream.
    pub failed_rows: AtomicU64,
    description: CalcDescription,
    failure_log: Mutex<FailureLog>,
    /// For each projection, the input column it passes through unchanged, if it does.
    plain_columns: Vec<Option<usize>>,
    /// Input columns an expression reads; only these cross into Arrow.
    needed_columns: Vec<bool>,
    /// When every projection is a plain column and nothing is filtered, the columns to copy:
    /// picking datums from rows is far cheaper than a round trip through Arrow.
    column_picks: Option<Vec<usize>>,
    /// The identity of the expressions as written, when they differ from those run.
    written_identity: Option<String>,
}

impl Calc {
    pub fn new(
        input_schema: SchemaRef,
        predicate: Option<Arc<dyn PhysicalExpr>>,
        projections: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Self {
        let plain_columns: Vec<Option<usize>> = projections
            .iter()
            .map(|projection| {
                let column = projection.downcast_ref::<Column>()?;
                // A plain column passes through only if its type needs no conversion.
                let field = input_schema.field(column.index());
                let output = projection.return_field(&input_schema).ok()?;
                (field.data_type() == output.data_type()).then_some(column.index())
            })
            .collect();
        let mut needed_columns = vec![false; input_schema.fields().len()];
        let computed = projections
            .iter()
            .zip(&plain_columns)
            .filter(|(_, plain)| plain.is_none());
        for expression in computed.map(|(p, _)| p).chain(predicate.iter()) {
            for column in collect_columns(expression) {
                needed_columns[column.index()] = true;
            }
        }
        let column_picks = match predicate {
            Some(_) => None,
            None => plain_columns.iter().copied().collect(),
        };
        Calc {
            input_schema,
            predicate,
            projections,
            failed_rows: AtomicU64::new(0),
            description: CalcDescription::default(),
            failure_log: Mutex::new(FailureLog {
                last_logged: None,
                unlogged: 0,
            }),
            plain_columns,
            needed_columns,
            column_picks,
            written_identity: None,
        }
    }

    /// Names what the Calc computes, as the user wrote it, for its error rows.
    pub fn described(mut self, description: CalcDescription) -> Self {
        self.description = description;
        self
    }

    /// What the Calc computes, as text that stays the same from run to run and machine to
    /// machine (expressions as displayed, the input's columns): part of how checkpoints
    /// recognise unchanged state after the pipeline is edited.
    pub fn identity(&self) -> String {
        if let Some(identity) = &self.written_identity {
            return identity.clone();
        }
        identity_of(
            &self.input_schema,
            self.predicate.as_ref(),
            &self.projections,
        )
    }

    /// Names the Calc by the expressions as written, when those it runs were simplified
    /// (constants folded): the identity stays what earlier builds, which ran them as written,
    /// gave it, so their checkpoints still recognise the state after it.
    pub fn identified_as_written(
        mut self,
        predicate: Option<&Arc<dyn PhysicalExpr>>,
        projections: &[Arc<dyn PhysicalExpr>],
    ) -> Self {
        self.written_identity = Some(identity_of(&self.input_schema, predicate, projections));
        self
    }

    /// Names the view this Calc belongs to (known once the view's query is planned).
    pub fn set_view(&mut self, view: &str) {
        self.description.view = view.to_string();
    }

    /// The view this Calc belongs to.
    pub fn view(&self) -> &str {
        &self.description.view
    }

    /// The input columns this Calc copies, when it only copies columns (no filter, no
    /// expression): operators upstream can then produce the narrow rows directly.
    pub fn column_picks(&self) -> Option<&[usize]> {
        self.column_picks.as_deref()
    }

    /// Evaluates a batch of rows; returns, for each surviving input row, its index and new row.
    pub fn evaluate(&self, rows: &[&Row]) -> Result<Vec<(usize, Row)>, DataFusionError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(picks) = &self.column_picks {
            let picked = rows.iter().enumerate().map(|(index, row)| {
                (
                    index,
                    picks.iter().map(|&column| row[column].clone()).collect(),
                )
            });
            return Ok(picked.collect());
        }
        let batch = rows_to_batch_columns(
            &self.input_schema,
            rows.iter().copied(),
            rows.len(),
            Some(&self.needed_columns),
        )?;
        let mut selected: Vec<usize> = (0..rows.len()).collect();
        let batch = match &self.predicate {
            None => batch,
            Some(predicate) => {
                let mask = predicate.evaluate(&batch)?.into_array(rows.len())?;
                let mask = mask
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| DataFusionError::Internal("predicate is not boolean".into()))?;
                selected.retain(|&i| mask.is_valid(i) && mask.value(i));
                filter_record_batch(&batch, mask)?
            }
        };
        let mut out: Vec<Row> = selected
            .iter()
            .map(|_| Vec::with_capacity(self.projections.len()))
            .collect();
        for (projection, plain) in self.projections.iter().zip(&self.plain_columns) {
            match plain {
                // A column passed through: the input's datum, no round trip through Arrow.
                Some(column) => {
                    for (row, &index) in out.iter_mut().zip(&selected) {
                        row.push(rows[index][*column].clone());
                    }
                }
                None => {
                    let column = projection.evaluate(&batch)?.into_array(batch.num_rows())?;
                    append_column(column.as_ref(), &mut out)?;
                }
            }
        }
        Ok(selected.into_iter().zip(out).collect())
    }

    /// Evaluates rows, isolating rows that fail so one bad row does not lose its batch. With
    /// `errors`, each failed row is counted, logged in summary and described there; without, it
    /// is left to another evaluation of the same rows to report.
    fn evaluate_tolerant(
        &self,
        rows: &[&Row],
        mut errors: Option<&mut Vec<Row>>,
    ) -> Vec<(usize, Row)> {
        match self.evaluate(rows) {
            Ok(out) => out,
            Err(_) if rows.len() > 1 => {
                let mut out = Vec::new();
                for (index, row) in rows.iter().enumerate() {
                    out.extend(
                        self.evaluate_tolerant(&[row], errors.as_deref_mut())
                            .into_iter()
                            .map(|(_, row)| (index, row)),
                    );
                }
                out
            }
            Err(error) => {
                if let (Some(errors), Some(row)) = (errors, rows.first()) {
                    self.failed_rows.fetch_add(1, Ordering::Relaxed);
                    let (expression, error) = self
                        .failing_expression(row)
                        .unwrap_or_else(|| ("(the whole row)".to_string(), error.to_string()));
                    self.log_failure(&expression, &error);
                    errors.push(vec![
                        Datum::Utf8(expression.into()),
                        Datum::Utf8(error.into()),
                        Datum::Utf8(self.row_json(row).into()),
                    ]);
                }
                Vec::new()
            }
        }
    }

    /// Which expression fails on `row`, as written, and its error.
    fn failing_expression(&self, row: &Row) -> Option<(String, String)> {
        let batch =
            rows_to_batch_columns(&self.input_schema, std::iter::once(row), 1, None).ok()?;
        let written = |index: Option<usize>| -> String {
            let description = &self.description;
            match index {
                None => description.predicate.clone(),
                Some(index) => description.projections.get(index).cloned(),
            }
            .unwrap_or_default()
        };
        if let Some(predicate) = &self.predicate
            && let Err(error) = predicate.evaluate(&batch)
        {
            return Some((written(None), error.to_string()));
        }
        for (index, projection) in self.projections.iter().enumerate() {
            if let Err(error) = projection
                .evaluate(&batch)
                .and_then(|value| value.into_array(1))
            {
                return Some((written(Some(index)), error.to_string()));
            }
        }
        None
    }

    /// The input row as a JSON object with its columns in order, for people to read.
    fn row_json(&self, row: &Row) -> String {
        let mut text = String::from("{");
        for (index, (field, datum)) in self.input_schema.fields().iter().zip(row).enumerate() {
            if index > 0 {
                text.push(',');
            }
            let value = json_value(datum);
            text.push_str(&serde_json::Value::from(field.name().as_str()).to_string());
            text.push(':');
            text.push_str(&value.to_string());
        }
        text.push('}');
        text
    }

    /// Logs a summary of the failures at most every [`LOG_EVERY`].
    fn log_failure(&self, expression: &str, error: &str) {
        let mut log = self.failure_log.lock().unwrap_or_else(|p| p.into_inner());
        log.unlogged += 1;
        if log
            .last_logged
            .is_some_and(|last| last.elapsed() < LOG_EVERY)
        {
            return;
        }
        let view = &self.description.view;
        let kept = if view.is_empty() {
            "in a query: dropped".to_string()
        } else {
            format!("kept in {view}_errors")
        };
        tracing::warn!(
            view = %view,
            "{} row(s) failed to evaluate ({kept}); latest: {expression}: {error}",
            log.unlogged
        );
        log.last_logged = Some(Instant::now());
        log.unlogged = 0;
    }
}

/// Applies a [`Calc`] to streams of rows or updates.
///
/// ```
/// use std::sync::Arc;
/// use datafusion::arrow::datatypes::{DataType, Field, Schema};
/// use datafusion::physical_expr::expressions::{col, lit, BinaryExpr};
/// use datafusion::logical_expr::Operator as BinaryOperator;
/// use timely::dataflow::operators::{Capture, ToStream, capture::Extract};
/// use vibelux_operators::calc::{Calc, CalcExt};
/// use vibelux_operators::row::Datum;
///
/// let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
/// let doubled = Arc::new(BinaryExpr::new(col("x", &schema).unwrap(), BinaryOperator::Multiply, lit(2i64)));
/// let calc = Arc::new(Calc::new(schema, None, vec![doubled]));
/// let captured = timely::example(move |scope| {
///     vec![vec![Datum::Int64(1)], vec![Datum::Int64(5)]]
///         .to_stream(scope)
///         .container::<Vec<_>>()
///         .calc_rows(calc)
///         .capture()
/// });
/// let rows: Vec<_> = captured.extract().into_iter().flat_map(|(_, rows)| rows).collect();
/// assert_eq!(rows, vec![vec![Datum::Int64(2)], vec![Datum::Int64(10)]]);
/// ```
pub trait CalcExt<'scope> {
    /// The rows the Calc keeps, computed; rows it fails on are reported by another evaluation
    /// of the same rows (see [`CalcExt::calc_rows_reporting`]).
    fn calc_rows(self, calc: Arc<Calc>) -> Stream<'scope, u64, Vec<Row>>;

    /// The rows the Calc keeps, computed, and an error row (expression, error, input row as
    /// JSON) for each row it fails on, counted and logged in summary.
    fn calc_rows_reporting(
        self,
        calc: Arc<Calc>,
    ) -> (Stream<'scope, u64, Vec<Row>>, Stream<'scope, u64, Vec<Row>>);
}

impl<'scope> CalcExt<'scope> for Stream<'scope, u64, Vec<Row>> {
    fn calc_rows(self, calc: Arc<Calc>) -> Stream<'scope, u64, Vec<Row>> {
        calc_stream(self, "Calc", calc, false, |row| row, |_, row| row).0
    }

    fn calc_rows_reporting(
        self,
        calc: Arc<Calc>,
    ) -> (Stream<'scope, u64, Vec<Row>>, Stream<'scope, u64, Vec<Row>>) {
        calc_stream(self, "Calc", calc, true, |row| row, |_, row| row)
    }
}

/// Applies `calc` to each batch of `stream`: `row_of` reads an item's row, `rebuild` makes the
/// output item from an input item and its computed row. With `report`, the second stream holds
/// an error row for each row the Calc fails on.
fn calc_stream<'scope, D: Clone + 'static>(
    stream: Stream<'scope, u64, Vec<D>>,
    name: &str,
    calc: Arc<Calc>,
    report: bool,
    row_of: impl Fn(&D) -> &Row + 'static,
    rebuild: impl Fn(&D, Row) -> D + 'static,
) -> (Stream<'scope, u64, Vec<D>>, Stream<'scope, u64, Vec<Row>>) {
    use timely::dataflow::operators::generic::OutputBuilder;
    use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
    let mut builder = OperatorBuilder::new(name.to_owned(), stream.scope());
    let mut input = builder.new_input(stream, Pipeline);
    let (output, computed) = builder.new_output();
    let (error_output, errors) = builder.new_output();
    let mut output = OutputBuilder::from(output);
    let mut error_output = OutputBuilder::from(error_output);
    builder.build(move |_capabilities| {
        move |_frontiers| {
            let mut output = output.activate();
            let mut error_output = error_output.activate();
            input.for_each(|time, data| {
                let rows: Vec<&Row> = data.iter().map(&row_of).collect();
                let mut failed = Vec::new();
                let mut out: Vec<D> = calc
                    .evaluate_tolerant(&rows, report.then_some(&mut failed))
                    .into_iter()
                    .map(|(index, row)| rebuild(&data[index], row))
                    .collect();
                output.session(&time).give_container(&mut out);
                if !failed.is_empty() {
                    error_output.session(&time).give_container(&mut failed);
                }
            });
        }
    });
    (computed, errors)
}

/// Applies a [`Calc`] to a stream of updates, keeping each update's time and diff; the second
/// stream holds an error row for each update whose row the Calc fails on.
pub trait CalcUpdatesExt<'scope> {
    fn calc_updates(
        self,
        calc: Arc<Calc>,
    ) -> (
        Stream<'scope, u64, Vec<Update>>,
        Stream<'scope, u64, Vec<Row>>,
    );
}

impl<'scope> CalcUpdatesExt<'scope> for Stream<'scope, u64, Vec<Update>> {
    fn calc_updates(
        self,
        calc: Arc<Calc>,
    ) -> (
        Stream<'scope, u64, Vec<Update>>,
        Stream<'scope, u64, Vec<Row>>,
    ) {
        calc_stream(
            self,
            "CalcUpdates",
            calc,
            true,
            |(row, _, _)| row,
            |(_, time, diff), row| (row, *time, *diff),
        )
    }
}

/// A Calc's identity text: its input's columns and its expressions as displayed.
fn identity_of(
    input_schema: &SchemaRef,
    predicate: Option<&Arc<dyn PhysicalExpr>>,
    projections: &[Arc<dyn PhysicalExpr>],
) -> String {
    let columns: Vec<String> = input_schema
        .fields()
        .iter()
        .map(|field| format!("{}:{}", field.name(), field.data_type()))
        .collect();
    let projections: Vec<String> = projections.iter().map(ToString::to_string).collect();
    format!(
        "input ({}) where ({}) project ({})",
        columns.join(", "),
        predicate.map(ToString::to_string).unwrap_or_default(),
        projections.join(", ")
    )
}

/// A value as people read it in JSON: times as ISO 8601, non-finite floats as text.
fn json_value(datum: &Datum) -> serde_json::Value {
    match datum {
        Datum::Null => serde_json::Value::Null,
        Datum::Boolean(v) => (*v).into(),
        Datum::Int64(v) => (*v).into(),
        Datum::Float64(v) => serde_json::Number::from_f64(*v)
            .map_or_else(|| v.to_string().into(), serde_json::Value::Number),
        Datum::Utf8(v) => v.to_string().into(),
        Datum::Timestamp(v) => format_timestamp(*v).into(),
        Datum::Duration(v) => format_duration(*v).into(),
        Datum::Date(v) => format_date(*v).into(),
        Datum::List(values) => values.iter().map(json_value).collect(),
        Datum::Decimal { .. } => datum
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
    }
}
