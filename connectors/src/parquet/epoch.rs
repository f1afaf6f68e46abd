//! A warehouse epoch: the files one commit makes visible, staged under hidden names, and the
//! manifest whose appearance commits them (when, and for which writers, is `commit.rs`'s).

use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::SchemaRef;
use vibelux_interfaces::sink::SinkError;

use super::folder::{hidden_path, sync_directory, write_synced};

/// An epoch written to hidden files and not committed yet.
#[derive(Debug, Clone)]
pub(super) struct StagedEpoch {
    pub(super) epoch: u64,
    /// Each file: where it waits, where it goes, and its rows.
    pub(super) files: Vec<(PathBuf, PathBuf, usize)>,
}

fn io(path: &Path, source: std::io::Error) -> SinkError {
    SinkError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub(super) fn manifest_path(root: &Path, epoch: u64) -> PathBuf {
    root.join("_manifests")
        .join(format!("epoch-{epoch:06}.json"))
}

/// Commits a staged epoch: writes its manifest (the commit point, linked into place so that an
/// epoch is never committed twice), then renames its files to their visible names.
pub(super) fn publish(
    root: &Path,
    schema: &SchemaRef,
    staged: &StagedEpoch,
    writer_tag: &str,
) -> Result<(), SinkError> {
    let files: Vec<serde_json::Value> = staged
        .files
        .iter()
        .map(|(temporary, final_path, rows)| {
            let relative = final_path
                .strip_prefix(root)
                .unwrap_or(final_path)
                .display()
                .to_string();
            // Where the file waits until renamed, for a restart after a crash to finish.
            let staged = temporary
                .file_name()
                .map(|name| name.to_string_lossy().into_owned());
            serde_json::json!({ "file": relative, "rows": rows, "staged": staged })
        })
        .collect();
    let manifest = serde_json::json!({
        "epoch": staged.epoch,
        "committed_at": chrono::Utc::now().to_rfc3339(),
        "schema": schema.fields().iter().map(|f| serde_json::json!({"name": f.name(), "type": f.data_type().to_string()})).collect::<Vec<_>>(),
        "files": files,
    });
    let final_manifest = manifest_path(root, staged.epoch);
    let temporary = hidden_path(&final_manifest, writer_tag);
    write_synced(&temporary, manifest.to_string().as_bytes()).map_err(|e| io(&temporary, e))?;
    // A hard link, unlike a rename, never replaces an epoch someone else committed.
    let linked = std::fs::hard_link(&temporary, &final_manifest);
    let _ = std::fs::remove_file(&temporary);
    linked.map_err(|e| {
        let e = if e.kind() == std::io::ErrorKind::AlreadyExists {
            std::io::Error::other(format!(
                "epoch {} is already committed by another writer",
                staged.epoch
            ))
        } else {
            e
        };
        io(&final_manifest, e)
    })?;
    sync_directory(final_manifest.parent().unwrap_or(root));
    for (temporary, final_path, _) in &staged.files {
        std::fs::rename(temporary, final_path).map_err(|e| io(final_path, e))?;
        sync_directory(final_path.parent().unwrap_or(root));
    }
    Ok(())
}
