//! Filters and projections, evaluated by DataFusion physical expressions.
//!
//! A `WHERE` followed by a `SELECT` list is fused into one [`Calc`] (the name Calcite gives the
//! same node) so each batch of rows crosses into Arrow once. Both append-only streams and update
//! streams can be mapped: updates keep their time and diff.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::DataFusionError;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::utils::collect_columns;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::columnar::{append_column, rows_to_batch_columns};
use crate::row::{Row, Update};

/// A fused filter and projection over rows of `input_schema`.
#[derive(Debug)]
pub struct Calc {
    pub input_schema: SchemaRef,
    pub predicate: Option<Arc<dyn PhysicalExpr>>,
    pub projections: Vec<Arc<dyn PhysicalExpr>>,
    /// Rows whose evaluation failed (a cast that cannot succeed, say): counted and logged, dropped.
    pub failed_rows: AtomicU64,
    /// For each projection, the input column it passes through unchanged, if it does.
    plain_columns: Vec<Option<usize>>,
    /// Input columns an expression reads; only these cross into Arrow.
    needed_columns: Vec<bool>,
    /// When every projection is a plain column and nothing is filtered, the columns to copy:
    /// picking datums from rows is far cheaper than a round trip through Arrow.
    column_picks: Option<Vec<usize>>,
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
            plain_columns,
            needed_columns,
            column_picks,
        }
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

    /// Evaluates rows, isolating rows that fail so one bad row does not lose its batch.
    fn evaluate_tolerant(&self, rows: &[&Row]) -> Vec<(usize, Row)> {
        match self.evaluate(rows) {
            Ok(out) => out,
            Err(_) if rows.len() > 1 => {
                let mut out = Vec::new();
                for (index, row) in rows.iter().enumerate() {
                    out.extend(
                        self.evaluate_tolerant(&[row])
                            .into_iter()
                            .map(|(_, row)| (index, row)),
                    );
                }
                out
            }
            Err(error) => {
                self.failed_rows.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, row = ?rows.first(), "expression failed on a row; row dropped");
                Vec::new()
            }
        }
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
    fn calc_rows(self, calc: Arc<Calc>) -> Stream<'scope, u64, Vec<Row>>;
}

impl<'scope> CalcExt<'scope> for Stream<'scope, u64, Vec<Row>> {
    fn calc_rows(self, calc: Arc<Calc>) -> Stream<'scope, u64, Vec<Row>> {
        self.unary(Pipeline, "Calc", move |_, _| {
            move |input, output| {
                input.for_each(|time, data| {
                    let rows: Vec<&Row> = data.iter().collect();
                    let mut out: Vec<Row> = calc
                        .evaluate_tolerant(&rows)
                        .into_iter()
                        .map(|(_, row)| row)
                        .collect();
                    output.session(&time).give_container(&mut out);
                });
            }
        })
    }
}

/// Applies a [`Calc`] to a stream of updates, keeping each update's time and diff.
pub trait CalcUpdatesExt<'scope> {
    fn calc_updates(self, calc: Arc<Calc>) -> Stream<'scope, u64, Vec<Update>>;
}

impl<'scope> CalcUpdatesExt<'scope> for Stream<'scope, u64, Vec<Update>> {
    fn calc_updates(self, calc: Arc<Calc>) -> Stream<'scope, u64, Vec<Update>> {
        self.unary(Pipeline, "CalcUpdates", move |_, _| {
            move |input, output| {
                input.for_each(|time, data| {
                    let rows: Vec<&Row> = data.iter().map(|(row, _, _)| row).collect();
                    let mut out: Vec<Update> = calc
                        .evaluate_tolerant(&rows)
                        .into_iter()
                        .map(|(index, row)| (row, data[index].1, data[index].2))
                        .collect();
                    output.session(&time).give_container(&mut out);
                });
            }
        })
    }
}
