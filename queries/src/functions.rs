//! Vibelux's own SQL functions: the cultivation formulas of `operators::cultivation` as
//! DataFusion scalar functions, so they plan, type-check and run like the built-in ones; and
//! `anomaly_score`, declared to DataFusion for planning and computed by the streaming operator.
//! (The time-weighted aggregates are in `time_weighted.rs`.)
//!
//! NULL in gives NULL out. Out-of-range input also gives NULL, and is counted
//! (`vibelux_function_out_of_range_total`).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err, not_impl_err, plan_err};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignature, Volatility,
};
use datafusion::logical_expr::{PartitionEvaluator, WindowUDF, WindowUDFImpl};
use vibelux_operators::cultivation::{self, SaturationFormula};

/// Which formula a function evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Formula {
    VpdAir,
    VpdLeaf,
    VpdLeafOffset,
    DewPoint,
    AbsHumidity,
    HumidityDeficit,
    Enthalpy,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Cultivation {
    name: &'static str,
    formula: Formula,
    signature: Signature,
}

impl Cultivation {
    fn new(name: &'static str, formula: Formula, signatures: Vec<Vec<DataType>>) -> Self {
        let signature = Signature::one_of(
            signatures.into_iter().map(TypeSignature::Exact).collect(),
            Volatility::Immutable,
        );
        Cultivation {
            name,
            formula,
            signature,
        }
    }
}

/// `anomaly_score('detector', value) OVER (PARTITION BY …)`, as the planner sees it: the
/// streaming operator `ScoreAnomalies` computes it; DataFusion's own execution does not.
#[derive(Debug, PartialEq, Eq, Hash)]
struct AnomalyScore {
    signature: Signature,
}

impl WindowUDFImpl for AnomalyScore {
    fn name(&self) -> &str {
        "anomaly_score"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn partition_evaluator(
        &self,
        _args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        not_impl_err!(
            "anomaly_score is computed by streaming views (CREATE VIEW … OVER (PARTITION BY …)); ad-hoc queries cannot compute it"
        )
    }

    fn field(&self, args: WindowUDFFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(args.name(), DataType::Float64, true)))
    }
}

/// The window function `anomaly_score`, ready to register.
pub fn anomaly_score_function() -> Arc<WindowUDF> {
    // The detector's name, then one value, or several for a detector that scores them together.
    let signature = Signature::one_of(
        (1..=8)
            .map(|values| {
                let mut types = vec![DataType::Utf8];
                types.extend(std::iter::repeat_n(DataType::Float64, values));
                TypeSignature::Exact(types)
            })
            .collect(),
        Volatility::Immutable,
    );
    Arc::new(WindowUDF::from(AnomalyScore { signature }))
}

/// The cultivation functions, ready to register.
pub fn cultivation_functions() -> Vec<Arc<ScalarUDF>> {
    use DataType::{Float64 as F, Utf8 as T};
    [
        Cultivation::new("vpd_air", Formula::VpdAir, vec![vec![F, F], vec![F, F, T]]),
        Cultivation::new("vpd_leaf", Formula::VpdLeaf, vec![vec![F, F, F]]),
        Cultivation::new(
            "vpd_leaf_offset",
            Formula::VpdLeafOffset,
            vec![vec![F, F, F]],
        ),
        Cultivation::new("dew_point", Formula::DewPoint, vec![vec![F, F]]),
        Cultivation::new("abs_humidity", Formula::AbsHumidity, vec![vec![F, F]]),
        Cultivation::new(
            "humidity_deficit",
            Formula::HumidityDeficit,
            vec![vec![F, F]],
        ),
        Cultivation::new(
            "enthalpy",
            Formula::Enthalpy,
            vec![vec![F, F], vec![F, F, F]],
        ),
    ]
    .into_iter()
    .map(|function| Arc::new(ScalarUDF::from(function)))
    .collect()
}

impl ScalarUDFImpl for Cultivation {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    /// Checks vpd_air's formula when the statement is planned, not when rows arrive.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        if self.formula == Formula::VpdAir && args.arg_fields.len() == 3 {
            match args.scalar_arguments.get(2).copied().flatten() {
                Some(ScalarValue::Utf8(Some(name))) if SaturationFormula::parse(name).is_some() => {
                }
                Some(ScalarValue::Utf8(Some(name))) => {
                    return plan_err!(
                        "vpd_air: unknown formula '{name}'; use 'tetens' (the default) or 'buck'"
                    );
                }
                _ => {
                    return plan_err!(
                        "vpd_air's third argument is 'tetens' or 'buck', as a constant"
                    );
                }
            }
        }
        Ok(Arc::new(Field::new(self.name, DataType::Float64, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        // The Buck/Tetens choice is a constant: read it once.
        let mut formula = SaturationFormula::Tetens;
        let mut numbers: Vec<ArrayRef> = Vec::new();
        for (position, arg) in args.args.iter().enumerate() {
            if self.formula == Formula::VpdAir && position == 2 {
                let ColumnarValue::Scalar(ScalarValue::Utf8(Some(name))) = arg else {
                    return exec_err!(
                        "vpd_air's third argument is 'tetens' or 'buck', as a constant"
                    );
                };
                formula = match SaturationFormula::parse(name) {
                    Some(formula) => formula,
                    None => {
                        return plan_err!(
                            "vpd_air: unknown formula '{name}'; use 'tetens' (the default) or 'buck'"
                        );
                    }
                };
                continue;
            }
            numbers.push(cast(&arg.to_array(rows)?, &DataType::Float64)?);
        }
        let columns: Vec<&Float64Array> = numbers
            .iter()
            .map(|array| {
                array
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .expect("cast to Float64")
            })
            .collect();
        let value = |column: usize, row: usize| -> Option<f64> {
            let array = columns[column];
            (!array.is_null(row)).then(|| array.value(row))
        };
        let result: Float64Array = (0..rows)
            .map(|row| {
                let (t, rh) = (value(0, row)?, value(1, row)?);
                match self.formula {
                    Formula::VpdAir => cultivation::vpd_air(t, rh, formula),
                    Formula::VpdLeaf => cultivation::vpd_leaf(t, rh, value(2, row)?),
                    Formula::VpdLeafOffset => cultivation::vpd_leaf_offset(t, rh, value(2, row)?),
                    Formula::DewPoint => cultivation::dew_point(t, rh),
                    Formula::AbsHumidity => cultivation::abs_humidity(t, rh),
                    Formula::HumidityDeficit => cultivation::humidity_deficit(t, rh),
                    Formula::Enthalpy => {
                        let pressure = if columns.len() > 2 {
                            value(2, row)?
                        } else {
                            101.325
                        };
                        cultivation::enthalpy(t, rh, pressure)
                    }
                }
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(result)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, args: Vec<ColumnarValue>, rows: usize) -> Float64Array {
        let function = cultivation_functions()
            .into_iter()
            .find(|function| function.name() == name)
            .unwrap();
        let arg_fields = args
            .iter()
            .map(|arg| Arc::new(Field::new("a", arg.data_type(), true)))
            .collect();
        let result = function
            .invoke_with_args(ScalarFunctionArgs {
                args,
                arg_fields,
                number_rows: rows,
                return_field: Arc::new(Field::new("r", DataType::Float64, true)),
                config_options: Default::default(),
            })
            .unwrap();
        let ColumnarValue::Array(array) = result else {
            panic!()
        };
        array
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .clone()
    }

    #[test]
    fn nulls_and_out_of_range_give_null() {
        let temps = Arc::new(Float64Array::from(vec![Some(25.0), None, Some(25.0)]));
        let rh = Arc::new(Float64Array::from(vec![
            Some(60.0),
            Some(60.0),
            Some(150.0),
        ]));
        let result = call(
            "vpd_air",
            vec![ColumnarValue::Array(temps), ColumnarValue::Array(rh)],
            3,
        );
        assert!((result.value(0) - 1.267).abs() < 0.0005);
        assert!(result.is_null(1));
        assert!(result.is_null(2));
    }

    #[test]
    fn buck_is_chosen_by_name() {
        let args = vec![
            ColumnarValue::Scalar(ScalarValue::Float64(Some(25.0))),
            ColumnarValue::Scalar(ScalarValue::Float64(Some(60.0))),
            ColumnarValue::Scalar(ScalarValue::Utf8(Some("buck".into()))),
        ];
        let result = call("vpd_air", args, 1);
        assert!(
            (result.value(0) - 1.2675).abs() < 0.001,
            "{}",
            result.value(0)
        );
    }
}
