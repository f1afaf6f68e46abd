//! ONNX models scored inside the dataflow, through ONNX Runtime (the `ort` crate).
//!
//! ONNX Runtime is a shared library loaded when the first model is created, never at build time
//! ([`runtime`]), so Vibelux builds and runs without it; only `CREATE MODEL` needs it. A
//! [`model::OnnxModel`] checks at load time that the model takes a row of numbers and gives one
//! number per row, and scores a whole batch of rows per call. The [`registry::ModelRegistry`]
//! holds each model's live version and, in shadow mode, a candidate: views hold the registry, not
//! a model, so replacing a version takes effect at the next batch without restarting anything.
//! [`reference`] compares what a model sees with what it was trained on (PSI).

pub mod model;
pub mod reference;
pub mod registry;
pub mod runtime;

pub use model::{ModelOptions, OnnxModel};
pub use reference::FeatureReference;
pub use registry::{ModelRegistry, ModelSlot};

/// Why a model cannot be loaded or scored.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    RuntimeMissing(String),
    #[error("cannot load model `{path}`: {message}")]
    Load { path: String, message: String },
    #[error("model `{path}`: {message}")]
    Signature { path: String, message: String },
    #[error("model {name} (version {version}): {message}")]
    Inference {
        name: String,
        version: String,
        message: String,
    },
    #[error("{0}")]
    Catalog(String),
}
