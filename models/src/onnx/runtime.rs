//! Finding and loading ONNX Runtime, once per process.
//!
//! `ort` is built with dynamic loading, so no binary is downloaded at build time and Vibelux runs
//! where ONNX Runtime is absent; only models need it. The library comes from PyPI's
//! `onnxruntime` wheel, which carries it as `onnxruntime/capi/libonnxruntime.so.<version>`. It
//! is found, in order:
//! 1. at `ORT_DYLIB_PATH` (the variable `ort` itself documents), when set;
//! 2. in the `onnxruntime` package that `python3` imports (`VIBELUX_PYTHON` names another
//!    interpreter), so `pip install onnxruntime` is all a laptop needs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ort::environment::Environment;

use super::ModelError;

/// The ONNX Runtime version tested with Vibelux (`ort`'s `api-31` needs 1.31 or newer).
pub const TESTED_VERSION: &str = "1.31.1";

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// The process's ONNX Runtime environment, loading the library on first use.
pub fn environment() -> Result<&'static Environment, ModelError> {
    ENVIRONMENT
        .get_or_init(load)
        .as_ref()
        .map_err(|message| ModelError::RuntimeMissing(message.clone()))
}

fn install_hint() -> String {
    format!(
        "install it with `python3 -m pip install onnxruntime=={TESTED_VERSION}` (the wheel carries the library), \
         or point ORT_DYLIB_PATH at a libonnxruntime.so of version 1.31 or newer"
    )
}

fn load() -> Result<Environment, String> {
    let path = locate()?;
    let builder = ort::init_from(&path).map_err(|error| {
        format!(
            "ONNX Runtime at {} could not be loaded: {error}; {}",
            path.display(),
            install_hint()
        )
    })?;
    let environment = builder
        .with_name("vibelux")
        .build()
        .map_err(|error| format!("ONNX Runtime at {}: {error}", path.display()))?;
    tracing::info!(library = %path.display(), "ONNX Runtime loaded");
    Ok(environment)
}

/// Where the library is, or why it was not found.
pub fn locate() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "ORT_DYLIB_PATH is {}, which is not a file; {}",
                path.display(),
                install_hint()
            ))
        };
    }
    let python = std::env::var("VIBELUX_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let package = Command::new(&python)
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    match package {
        Some(package) => library_in(&package.join("capi")).ok_or_else(|| {
            format!(
                "the onnxruntime package at {} has no libonnxruntime.so in capi/; {}",
                package.display(),
                install_hint()
            )
        }),
        None => Err(format!(
            "ONNX Runtime is not installed: ORT_DYLIB_PATH is not set and `{python}` cannot import onnxruntime; {}",
            install_hint()
        )),
    }
}

/// The library in a wheel's `capi` folder: `libonnxruntime.so.<version>` (or a plain `.so`).
fn library_in(folder: &Path) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(folder)
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| {
                    name.starts_with("libonnxruntime.so") || name == "libonnxruntime.dylib"
                })
        })
        .collect();
    // The longest name is the versioned library the others link to.
    candidates.sort_by_key(|path| std::cmp::Reverse(path.as_os_str().len()));
    candidates.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_versioned_library_in_a_wheel_is_found() {
        let folder = std::env::temp_dir().join(format!("vibelux-capi-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        for name in [
            "libonnxruntime.so.1.31.1",
            "libonnxruntime_providers_shared.so",
            "onnxruntime_pybind11_state.so",
        ] {
            std::fs::write(folder.join(name), b"").unwrap();
        }
        let found = library_in(&folder).unwrap();
        assert_eq!(found.file_name().unwrap(), "libonnxruntime.so.1.31.1");
        std::fs::remove_dir_all(&folder).unwrap();
    }
}
