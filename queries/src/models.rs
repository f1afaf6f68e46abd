//! ONNX models in SQL: `CREATE [OR REPLACE] MODEL`, `predict`, `predict_shadow` and `psi`.
//!
//! `predict('model', a, b, …)` is a DataFusion scalar function, so it runs inside the view's
//! filter-and-projection operator on whole Arrow batches: one inference per batch, not per row.
//! It holds the pipeline's [`ModelRegistry`] rather than a model and looks the model up per
//! batch; a new version installed with `CREATE OR REPLACE MODEL` therefore scores the next batch.
//! Planning checks the model exists and takes as many features as the call gives, so a mistake
//! is a SQL error with a position, not a stream of failed rows.
//!
//! `psi('model', 'feature', value)` is an aggregate whose state the streaming `GROUP BY` keeps
//! (a histogram over the model's training bins); DataFusion sees it only to plan.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{Array, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err, not_impl_err, plan_err};
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::{
    AggregateUDF, AggregateUDFImpl, ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use vibelux_models::onnx::{ModelOptions, ModelRegistry, ModelSlot, OnnxModel};

use crate::error::{Position, SqlError, SqlResult};
use crate::parser::CreateModel;
use crate::planner::{Outcome, Planner};

/// `predict` (the live version) or `predict_shadow` (the candidate).
#[derive(Debug)]
struct Predict {
    registry: Arc<ModelRegistry>,
    shadow: bool,
    signature: Signature,
}

impl PartialEq for Predict {
    fn eq(&self, other: &Self) -> bool {
        self.shadow == other.shadow && Arc::ptr_eq(&self.registry, &other.registry)
    }
}

impl Eq for Predict {}

impl Hash for Predict {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.shadow.hash(state);
    }
}

impl Predict {
    fn name(&self) -> &'static str {
        if self.shadow {
            "predict_shadow"
        } else {
            "predict"
        }
    }

    fn slot(&self, name: &str) -> Result<ModelSlot> {
        match self.registry.get(name) {
            Some(slot) => Ok(slot),
            None => {
                let known = self.registry.names();
                plan_err!(
                    "unknown model `{name}`; {}",
                    if known.is_empty() {
                        "create one first: CREATE MODEL name FROM 'file.onnx'".to_string()
                    } else {
                        format!("models: {}", known.join(", "))
                    }
                )
            }
        }
    }
}

fn model_name<'a>(function: &str, first: Option<&'a ScalarValue>) -> Result<&'a str> {
    match first {
        Some(ScalarValue::Utf8(Some(name)) | ScalarValue::LargeUtf8(Some(name))) => Ok(name),
        _ => plan_err!(
            "{function}'s first argument is the model's name, quoted: {function}('model', column, …)"
        ),
    }
}

impl ScalarUDFImpl for Predict {
    fn name(&self) -> &str {
        Predict::name(self)
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let name = Predict::name(self);
        let Some((first, features)) = arg_types.split_first() else {
            return plan_err!("{name}('model', column, …) needs a model and its features");
        };
        if !matches!(
            first,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            return plan_err!(
                "{name}'s first argument is the model's name, quoted: {name}('model', column, …)"
            );
        }
        let mut coerced = vec![DataType::Utf8];
        for (index, data_type) in features.iter().enumerate() {
            if !(data_type.is_numeric() || data_type.is_null()) {
                return plan_err!(
                    "{name}: feature {} is {data_type}; models take numbers",
                    index + 1
                );
            }
            coerced.push(DataType::Float64);
        }
        Ok(coerced)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    /// Checks the model and the number of features when the view is planned.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let function = Predict::name(self);
        let name = model_name(function, args.scalar_arguments.first().copied().flatten())?;
        let slot = self.slot(name)?;
        let given = args.arg_fields.len() - 1;
        let model = &slot.live;
        if given != model.feature_count() {
            return plan_err!(
                "model {name} takes {} features ({}), but {function} gives it {given}",
                model.feature_count(),
                model.features.join(", ")
            );
        }
        Ok(Arc::new(Field::new(function, DataType::Float64, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let Some(ColumnarValue::Scalar(first)) = args.args.first() else {
            return exec_err!(
                "{}: the model's name must be a constant",
                Predict::name(self)
            );
        };
        let name = model_name(Predict::name(self), Some(first))?;
        let slot = self.slot(name)?;
        let model = if self.shadow {
            match slot.candidate {
                Some(candidate) => candidate,
                None => {
                    return Ok(ColumnarValue::Array(Arc::new(Float64Array::new_null(rows))));
                }
            }
        } else {
            slot.live
        };
        let columns = args.args[1..]
            .iter()
            .map(|arg| {
                let array = cast(&arg.to_array(rows)?, &DataType::Float64)?;
                Ok(array
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .expect("cast to Float64")
                    .clone())
            })
            .collect::<Result<Vec<Float64Array>>>()?;
        if columns.len() != model.feature_count() {
            return exec_err!(
                "model {name} version {} takes {} features, given {}",
                model.version,
                model.feature_count(),
                columns.len()
            );
        }
        // Rows with a NULL feature are not scored: their score is NULL.
        let complete: Vec<usize> = (0..rows)
            .filter(|row| columns.iter().all(|column| !column.is_null(*row)))
            .collect();
        let mut features = Vec::with_capacity(complete.len() * columns.len());
        for row in &complete {
            features.extend(columns.iter().map(|column| column.value(*row)));
        }
        let scores = if complete.is_empty() {
            Vec::new()
        } else {
            model
                .predict(complete.len(), &features)
                .map_err(|error| datafusion::error::DataFusionError::Execution(error.to_string()))?
        };
        let mut result = vec![None; rows];
        for (row, score) in complete.into_iter().zip(scores) {
            result[row] = Some(score);
        }
        Ok(ColumnarValue::Array(Arc::new(Float64Array::from(result))))
    }
}

/// `psi('model', 'feature', value)`, as the planner sees it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PopulationStability {
    signature: Signature,
}

impl AggregateUDFImpl for PopulationStability {
    fn name(&self) -> &str {
        "psi"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn datafusion::logical_expr::Accumulator>> {
        not_impl_err!(
            "psi is maintained by streaming views (CREATE VIEW … GROUP BY); ad-hoc queries cannot compute it"
        )
    }
}

/// `predict` and `predict_shadow` over `registry`.
pub fn predict_functions(registry: &Arc<ModelRegistry>) -> Vec<Arc<ScalarUDF>> {
    [false, true]
        .into_iter()
        .map(|shadow| {
            Arc::new(ScalarUDF::from(Predict {
                registry: registry.clone(),
                shadow,
                // Volatile: a constant call must not be folded at planning, when the version
                // that answers may later change.
                signature: Signature::user_defined(Volatility::Volatile),
            }))
        })
        .collect()
}

/// The `psi` aggregate, ready to register.
pub fn population_stability_function() -> Arc<AggregateUDF> {
    let signature = Signature::one_of(
        vec![TypeSignature::Exact(vec![
            DataType::Utf8,
            DataType::Utf8,
            DataType::Float64,
        ])],
        Volatility::Immutable,
    );
    Arc::new(AggregateUDF::from(PopulationStability { signature }))
}

const MODEL_OPTIONS: &[&str] = &["version", "output", "threads", "mode"];

/// The models a query calls by name (`predict('name', …)`, `predict_shadow('name', …)`).
pub(crate) fn models_called(query: &datafusion::sql::sqlparser::ast::Query) -> Vec<String> {
    use datafusion::sql::sqlparser::ast::{
        Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Value, visit_expressions,
    };
    let mut called = Vec::new();
    let _ = visit_expressions(query, |expr| {
        if let Expr::Function(function) = expr
            && matches!(
                function.name.to_string().to_ascii_lowercase().as_str(),
                "predict" | "predict_shadow"
            )
            && let FunctionArguments::List(list) = &function.args
            && let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(value)))) =
                list.args.first()
            && let Value::SingleQuotedString(name) = &value.value
        {
            called.push(name.to_ascii_lowercase());
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    called.sort();
    called.dedup();
    called
}

impl Planner {
    /// `CREATE [OR REPLACE] MODEL`: loads the file, checks it, installs it.
    pub(crate) fn create_model(
        &mut self,
        statement: &CreateModel,
        position: Position,
    ) -> SqlResult<Outcome> {
        let name = statement.name.value.to_ascii_lowercase();
        if self.entries.contains_key(&name) {
            return Err(SqlError::new(
                Position::of(statement.name.span.start),
                format!("`{name}` is already a relation; a model needs a name of its own"),
            ));
        }
        let mut options = ModelOptions::default();
        let mut shadow = false;
        for option in &statement.options {
            let key = option.key.value.to_ascii_lowercase();
            let at = option.value_position;
            match key.as_str() {
                "version" => options.version = option.value.clone(),
                "output" => options.output = Some(option.value.clone()),
                "threads" => {
                    options.threads = option
                        .value
                        .parse()
                        .ok()
                        .filter(|threads| *threads > 0)
                        .ok_or_else(|| {
                            SqlError::new(
                                at,
                                format!("threads: expected a count, found {:?}", option.value),
                            )
                        })?;
                }
                "mode" => {
                    shadow = match option.value.to_ascii_lowercase().as_str() {
                        "live" => false,
                        "shadow" => true,
                        other => {
                            return Err(SqlError::new(
                                at,
                                format!("mode: expected 'live' or 'shadow', found '{other}'"),
                            ));
                        }
                    }
                }
                _ => {
                    return Err(SqlError::new(
                        Position::of(option.key.span.start),
                        format!(
                            "unknown option `{key}` for a model; options: {}",
                            MODEL_OPTIONS.join(", ")
                        ),
                    ));
                }
            }
        }
        let path = PathBuf::from(&statement.path);
        let model = OnnxModel::load(&name, &path, &options)
            .map_err(|error| SqlError::new(statement.path_position, error.to_string()))?;
        let signature = model.signature.clone();
        let done = self
            .models
            .install(model, statement.or_replace, shadow)
            .map_err(|error| SqlError::new(position, error.to_string()))?;
        Ok(Outcome::Done(format!("{done}: {signature}")))
    }

    pub(crate) fn drop_model(
        &mut self,
        name: &str,
        if_exists: bool,
        position: Position,
    ) -> SqlResult<Outcome> {
        let user = self
            .model_users
            .iter()
            .find(|(view, models)| {
                self.entries.contains_key(*view) && models.iter().any(|model| model == name)
            })
            .map(|(view, _)| view.clone());
        if let Some(view) = user {
            return Err(SqlError::new(
                position,
                format!(
                    "cannot drop model `{name}`: view `{view}` scores with it; drop that first"
                ),
            ));
        }
        match (self.models.remove(name), if_exists) {
            (true, _) => Ok(Outcome::Done(format!("dropped model {name}"))),
            (false, true) => Ok(Outcome::Done(format!(
                "model {name} does not exist; nothing dropped"
            ))),
            (false, false) => Err(SqlError::new(position, format!("unknown model `{name}`"))),
        }
    }

    pub(crate) fn show_models(&self) -> Outcome {
        let columns = [
            "name",
            "version",
            "file",
            "signature",
            "shadow_version",
            "drift_reference",
        ]
        .map(String::from)
        .to_vec();
        let rows = self
            .models
            .list()
            .into_iter()
            .map(|(name, slot)| {
                vec![
                    name,
                    slot.live.version.clone(),
                    slot.live.path.display().to_string(),
                    slot.live.signature.clone(),
                    slot.candidate
                        .as_ref()
                        .map_or_else(|| "none".to_string(), |candidate| candidate.version.clone()),
                    if slot.live.references.is_empty() {
                        "none".to_string()
                    } else {
                        slot.live
                            .references
                            .iter()
                            .map(|reference| reference.name.clone())
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                ]
            })
            .collect();
        Outcome::Table { columns, rows }
    }
}
