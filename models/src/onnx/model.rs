//! One ONNX model file, checked at load time and scored a batch at a time.
//!
//! Vibelux feeds models rows of numbers and reads back one number per row, the shape of
//! scikit-learn's exported models and most tabular ones. Two input layouts are accepted: one
//! tensor of `[rows, features]`, or one `[rows]` / `[rows, 1]` tensor per feature (in declared
//! order). The output is the one numeric tensor of `[rows]` or `[rows, 1]` values, or the one
//! named by `output` when the model has several (IsolationForest has `label` and `scores`).
//! Anything else is refused when the model is created, with the model's signature in the
//! message, rather than failing row by row later.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Outlet, Tensor, TensorElementType, ValueType};

use super::reference::{self, FeatureReference};
use super::{ModelError, runtime};

/// Metadata key naming the features, as a JSON list of strings (written by the training script).
pub const FEATURES_KEY: &str = "vibelux.features";

/// How a model is created: `CREATE MODEL … WITH (…)`.
#[derive(Clone, Debug)]
pub struct ModelOptions {
    pub version: String,
    /// The output to read, when the model has more than one numeric output.
    pub output: Option<String>,
    /// ONNX Runtime's threads per inference. One by default: the dataflow workers already use
    /// the cores, and a batch of tabular rows is too small to split.
    pub threads: usize,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            version: "1".to_string(),
            output: None,
            threads: 1,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Element {
    Float32,
    Float64,
}

#[derive(Debug)]
enum InputLayout {
    /// One `[rows, features]` tensor; `rows` is fixed for some exported models.
    Matrix {
        name: String,
        features: usize,
        element: Element,
        fixed_rows: Option<usize>,
    },
    /// One tensor per feature, `[rows]` or `[rows, 1]` (`column` true).
    Columns {
        names: Vec<String>,
        element: Element,
        column: bool,
    },
}

/// A loaded model: its session and what it takes and gives.
pub struct OnnxModel {
    pub name: String,
    pub version: String,
    pub path: PathBuf,
    input: InputLayout,
    output: String,
    output_type: TensorElementType,
    /// Feature names from the model's metadata, or `x0`, `x1`, … .
    pub features: Vec<String>,
    /// The training distribution of each feature, when the model carries one.
    pub references: Vec<FeatureReference>,
    /// The signature, for messages: `X: float32[N, 3] → scores: float32[N, 1]`.
    pub signature: String,
    session: Mutex<Session>,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("path", &self.path)
            .field("signature", &self.signature)
            .finish()
    }
}

fn describe(outlet: &Outlet) -> String {
    match outlet.dtype() {
        ValueType::Tensor { ty, shape, .. } => {
            let dims: Vec<String> = shape
                .iter()
                .map(|dim| {
                    if *dim < 0 {
                        "N".to_string()
                    } else {
                        dim.to_string()
                    }
                })
                .collect();
            format!("{}: {ty}[{}]", outlet.name(), dims.join(", "))
        }
        other => format!("{}: {other}", outlet.name()),
    }
}

fn tensor_of(outlet: &Outlet) -> Option<(TensorElementType, &[i64])> {
    match outlet.dtype() {
        ValueType::Tensor { ty, shape, .. } => Some((*ty, shape)),
        _ => None,
    }
}

fn element_of(ty: TensorElementType) -> Option<Element> {
    match ty {
        TensorElementType::Float32 => Some(Element::Float32),
        TensorElementType::Float64 => Some(Element::Float64),
        _ => None,
    }
}

/// Whether a dimension is "one value per row": `[N]` or `[N, 1]`.
fn per_row(shape: &[i64]) -> Option<bool> {
    match shape {
        [_] => Some(false),
        [_, 1] => Some(true),
        _ => None,
    }
}

impl InputLayout {
    fn of(inputs: &[Outlet]) -> Result<Self, String> {
        let mut element = None;
        for input in inputs {
            let ty = tensor_of(input)
                .and_then(|(ty, _)| element_of(ty))
                .ok_or_else(|| {
                    format!(
                        "input {} is not a float tensor; Vibelux feeds models float32 or float64 numbers",
                        describe(input)
                    )
                })?;
            if element.is_some_and(|first| first != ty) {
                return Err("inputs mix float32 and float64".to_string());
            }
            element = Some(ty);
        }
        let element = element.ok_or("the model has no inputs")?;
        if let [input] = inputs {
            let (_, shape) = tensor_of(input).expect("checked above");
            if let [rows, features] = shape
                && *features > 0
            {
                return Ok(InputLayout::Matrix {
                    name: input.name().to_string(),
                    features: *features as usize,
                    element,
                    fixed_rows: (*rows > 0).then_some(*rows as usize),
                });
            }
        }
        let mut column = None;
        for input in inputs {
            let (_, shape) = tensor_of(input).expect("checked above");
            let this = per_row(shape).ok_or_else(|| {
                format!(
                    "input {} is neither [rows, features] nor one value per row ([rows] or [rows, 1])",
                    describe(input)
                )
            })?;
            if column.is_some_and(|first| first != this) {
                return Err("inputs mix [rows] and [rows, 1] shapes".to_string());
            }
            column = Some(this);
        }
        Ok(InputLayout::Columns {
            names: inputs
                .iter()
                .map(|input| input.name().to_string())
                .collect(),
            element,
            column: column.unwrap_or(false),
        })
    }

    fn features(&self) -> usize {
        match self {
            InputLayout::Matrix { features, .. } => *features,
            InputLayout::Columns { names, .. } => names.len(),
        }
    }
}

fn choose_output(
    outputs: &[Outlet],
    wanted: Option<&str>,
) -> Result<(String, TensorElementType), String> {
    let numeric = |outlet: &Outlet| {
        tensor_of(outlet).is_some_and(|(ty, shape)| {
            matches!(
                ty,
                TensorElementType::Float32 | TensorElementType::Float64 | TensorElementType::Int64
            ) && per_row(shape).is_some()
        })
    };
    let listed = || outputs.iter().map(describe).collect::<Vec<_>>().join(", ");
    let chosen = match wanted {
        Some(name) => outputs
            .iter()
            .find(|outlet| outlet.name() == name)
            .ok_or_else(|| format!("has no output `{name}`; its outputs: {}", listed()))?,
        None => {
            let floats: Vec<&Outlet> = outputs
                .iter()
                .filter(|outlet| {
                    numeric(outlet)
                        && tensor_of(outlet).is_some_and(|(ty, _)| element_of(ty).is_some())
                })
                .collect();
            let candidates = if floats.is_empty() {
                outputs.iter().filter(|outlet| numeric(outlet)).collect()
            } else {
                floats
            };
            match candidates.as_slice() {
                [one] => *one,
                [] => {
                    return Err(format!(
                        "gives no number per row; its outputs: {}",
                        listed()
                    ));
                }
                _ => {
                    return Err(format!(
                        "has several numeric outputs ({}); choose one with output = '…'",
                        listed()
                    ));
                }
            }
        }
    };
    if !numeric(chosen) {
        return Err(format!(
            "output {} is not one number per row (float32, float64 or int64, [rows] or [rows, 1])",
            describe(chosen)
        ));
    }
    let (ty, _) = tensor_of(chosen).expect("numeric outputs are tensors");
    Ok((chosen.name().to_string(), ty))
}

/// A session on one thread pool of `threads`, which sleeps rather than spins between batches.
fn open_session(
    environment: &ort::environment::Environment,
    path: &Path,
    threads: usize,
) -> Result<Session, String> {
    let text = |error: ort::Error<_>| error.to_string();
    let mut builder = Session::builder(environment)
        .map_err(|error| error.to_string())?
        .with_intra_threads(threads.max(1))
        .map_err(text)?
        .with_inter_threads(1)
        .map_err(text)?
        .with_intra_op_spinning(false)
        .map_err(text)?;
    builder
        .commit_from_file(path)
        .map_err(|error| error.to_string())
}

impl OnnxModel {
    /// Loads `path` and checks its signature; fails when ONNX Runtime is not installed.
    pub fn load(name: &str, path: &Path, options: &ModelOptions) -> Result<Self, ModelError> {
        let load_error = |message: String| ModelError::Load {
            path: path.display().to_string(),
            message,
        };
        if !path.is_file() {
            return Err(load_error("no such file".to_string()));
        }
        let environment = runtime::environment()?;
        let session = open_session(environment, path, options.threads).map_err(load_error)?;
        let signature_error = |message: String| ModelError::Signature {
            path: path.display().to_string(),
            message,
        };
        let input = InputLayout::of(session.inputs()).map_err(signature_error)?;
        let (output, output_type) =
            choose_output(session.outputs(), options.output.as_deref()).map_err(signature_error)?;
        let signature = format!(
            "{} → {}",
            session
                .inputs()
                .iter()
                .map(describe)
                .collect::<Vec<_>>()
                .join(", "),
            session
                .outputs()
                .iter()
                .filter(|outlet| outlet.name() == output)
                .map(describe)
                .collect::<Vec<_>>()
                .join(", ")
        );
        let metadata = session
            .metadata()
            .map_err(|error| load_error(error.to_string()))?;
        let features = match metadata.custom(FEATURES_KEY) {
            Some(json) => serde_json::from_str::<Vec<String>>(&json).map_err(|error| {
                signature_error(format!(
                    "metadata {FEATURES_KEY} is not a list of names: {error}"
                ))
            })?,
            None => (0..input.features()).map(|i| format!("x{i}")).collect(),
        };
        if features.len() != input.features() {
            return Err(signature_error(format!(
                "metadata {FEATURES_KEY} names {} features, the model takes {}",
                features.len(),
                input.features()
            )));
        }
        let references = match metadata.custom(reference::METADATA_KEY) {
            Some(json) => reference::parse(&json).map_err(|error| {
                signature_error(format!("metadata {}: {error}", reference::METADATA_KEY))
            })?,
            None => Vec::new(),
        };
        drop(metadata);
        Ok(OnnxModel {
            name: name.to_string(),
            version: options.version.clone(),
            path: path.to_path_buf(),
            input,
            output,
            output_type,
            features,
            references,
            signature,
            session: Mutex::new(session),
        })
    }

    /// How many numbers a row gives the model.
    pub fn feature_count(&self) -> usize {
        self.input.features()
    }

    /// The training reference of the feature called `name`.
    pub fn reference(&self, name: &str) -> Option<&FeatureReference> {
        self.references
            .iter()
            .find(|reference| reference.name.eq_ignore_ascii_case(name))
    }

    /// Scores `rows` rows, `features` laid out row after row; one score per row.
    pub fn predict(&self, rows: usize, features: &[f64]) -> Result<Vec<f64>, ModelError> {
        let width = self.feature_count();
        assert_eq!(features.len(), rows * width, "rows × features values");
        let chunk = match &self.input {
            InputLayout::Matrix {
                fixed_rows: Some(fixed),
                ..
            } => *fixed,
            _ => rows.max(1),
        };
        let mut scores = Vec::with_capacity(rows);
        for start in (0..rows).step_by(chunk) {
            let count = chunk.min(rows - start);
            let mut batch = features[start * width..(start + count) * width].to_vec();
            // A model exported for a fixed number of rows gets padding, scored and discarded.
            batch.resize(chunk * width, 0.0);
            let mut batch_scores = self.run(chunk, &batch)?;
            batch_scores.truncate(count);
            scores.extend(batch_scores);
        }
        Ok(scores)
    }

    fn inference_error(&self, message: String) -> ModelError {
        ModelError::Inference {
            name: self.name.clone(),
            version: self.version.clone(),
            message,
        }
    }

    fn run(&self, rows: usize, features: &[f64]) -> Result<Vec<f64>, ModelError> {
        let fail = |error: ort::Error| self.inference_error(error.to_string());
        let width = self.feature_count();
        let tensor = |element: Element, shape: Vec<i64>, values: Vec<f64>| {
            let value: Result<DynValue, ort::Error> = match element {
                Element::Float32 => Tensor::from_array((
                    shape,
                    values.into_iter().map(|v| v as f32).collect::<Vec<f32>>(),
                ))
                .map(|tensor| tensor.into_dyn()),
                Element::Float64 => {
                    Tensor::from_array((shape, values)).map(|tensor| tensor.into_dyn())
                }
            };
            value
        };
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::new();
        match &self.input {
            InputLayout::Matrix { name, element, .. } => {
                let value = tensor(*element, vec![rows as i64, width as i64], features.to_vec())
                    .map_err(fail)?;
                inputs.push((Cow::Owned(name.clone()), value.into()));
            }
            InputLayout::Columns {
                names,
                element,
                column,
            } => {
                for (index, name) in names.iter().enumerate() {
                    let values: Vec<f64> = features
                        .iter()
                        .skip(index)
                        .step_by(width)
                        .copied()
                        .collect();
                    let shape = if *column {
                        vec![rows as i64, 1]
                    } else {
                        vec![rows as i64]
                    };
                    let value = tensor(*element, shape, values).map_err(fail)?;
                    inputs.push((Cow::Owned(name.clone()), value.into()));
                }
            }
        }
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session.run(inputs).map_err(fail)?;
        let output = outputs
            .get(&self.output)
            .ok_or_else(|| self.inference_error(format!("no output `{}`", self.output)))?;
        let scores: Vec<f64> = match self.output_type {
            TensorElementType::Float32 => output
                .try_extract_tensor::<f32>()
                .map_err(fail)?
                .1
                .iter()
                .map(|v| f64::from(*v))
                .collect(),
            TensorElementType::Float64 => {
                output.try_extract_tensor::<f64>().map_err(fail)?.1.to_vec()
            }
            _ => output
                .try_extract_tensor::<i64>()
                .map_err(fail)?
                .1
                .iter()
                .map(|v| *v as f64)
                .collect(),
        };
        if scores.len() != rows {
            return Err(self.inference_error(format!(
                "output `{}` gave {} values for {rows} rows",
                self.output,
                scores.len()
            )));
        }
        Ok(scores)
    }
}
