//! The models of a pipeline by name: each a live version and, in shadow mode, a candidate.
//!
//! `predict('name', …)` in a view holds the registry and looks the model up per batch, so
//! `CREATE OR REPLACE MODEL` swaps a version between two batches: rows before the swap are scored
//! by the old version, rows after by the new one, and none is lost or scored twice.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::ModelError;
use super::model::OnnxModel;

/// One model name's versions.
#[derive(Clone, Debug)]
pub struct ModelSlot {
    /// The version whose scores `predict` returns.
    pub live: Arc<OnnxModel>,
    /// A version under evaluation: `predict_shadow` returns its scores beside the live ones.
    pub candidate: Option<Arc<OnnxModel>>,
}

#[derive(Debug, Default)]
pub struct ModelRegistry {
    models: RwLock<BTreeMap<String, ModelSlot>>,
}

impl ModelRegistry {
    pub fn get(&self, name: &str) -> Option<ModelSlot> {
        self.models
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.models
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    pub fn list(&self) -> Vec<(String, ModelSlot)> {
        self.models
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, slot)| (name.clone(), slot.clone()))
            .collect()
    }

    /// Adds a model; the name must be new unless `or_replace`. Replacing makes `model` live and
    /// ends shadow mode; `shadow` keeps the live version and makes `model` the candidate.
    pub fn install(
        &self,
        model: OnnxModel,
        or_replace: bool,
        shadow: bool,
    ) -> Result<String, ModelError> {
        let name = model.name.to_ascii_lowercase();
        let mut models = self.models.write().unwrap_or_else(|p| p.into_inner());
        let model = Arc::new(model);
        match models.get_mut(&name) {
            None if shadow => Err(ModelError::Catalog(format!(
                "model {name} does not exist yet; a shadow version runs beside a live one: create it without mode = 'shadow' first"
            ))),
            None => {
                let version = model.version.clone();
                models.insert(
                    name.clone(),
                    ModelSlot {
                        live: model,
                        candidate: None,
                    },
                );
                Ok(format!("created model {name} version {version}"))
            }
            Some(_) if !or_replace => Err(ModelError::Catalog(format!(
                "model {name} already exists; CREATE OR REPLACE MODEL installs a new version"
            ))),
            Some(slot) => {
                if model.feature_count() != slot.live.feature_count() {
                    return Err(ModelError::Catalog(format!(
                        "model {name} version {} takes {} features, but version {} (live) takes {}; views score it with that many",
                        model.version,
                        model.feature_count(),
                        slot.live.version,
                        slot.live.feature_count()
                    )));
                }
                let version = model.version.clone();
                if shadow {
                    slot.candidate = Some(model);
                    Ok(format!(
                        "model {name} version {version} runs in shadow beside version {}",
                        slot.live.version
                    ))
                } else {
                    let previous = std::mem::replace(&mut slot.live, model);
                    slot.candidate = None;
                    Ok(format!(
                        "model {name} version {version} is live (was {})",
                        previous.version
                    ))
                }
            }
        }
    }

    pub fn remove(&self, name: &str) -> bool {
        self.models
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&name.to_ascii_lowercase())
            .is_some()
    }
}
