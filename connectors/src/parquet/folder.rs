//! The warehouse folder on disk: one writer's lock, hidden names for files being staged, writes
//! and renames made durable, and finishing what a crash interrupted.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use vibelux_interfaces::sink::SinkError;

/// Takes the warehouse's lock (`_manifests/.lock`, held while the writer lives and released by
/// the kernel when its process ends, even by `kill -9`), so a second engine started on the same
/// path by mistake is refused instead of overwriting the first one's files.
pub(super) fn lock_warehouse(path: &Path) -> Result<File, SinkError> {
    let lock_path = path.join("_manifests").join(".lock");
    let io = |source| SinkError::Io {
        path: lock_path.display().to_string(),
        source,
    };
    let mut lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(io)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
            return Err(SinkError::Io {
                path: path.display().to_string(),
                source: std::io::Error::other(format!(
                    "another process is writing this warehouse ({}); stop it, or write elsewhere",
                    holder.trim()
                )),
            });
        }
        Err(std::fs::TryLockError::Error(error)) => return Err(io(error)),
    }
    // Who holds it, for the message a second writer gets; on a full disk the lock still holds
    // without it.
    let _ = lock.set_len(0).and_then(|()| {
        write!(
            lock,
            "pid {} since {}",
            std::process::id(),
            chrono::Utc::now().to_rfc3339()
        )
    });
    Ok(lock)
}

/// `dir/part-1.parquet` → `dir/.part-1.parquet.tmp`: hidden from every reader's glob.
pub(super) fn hidden_path(path: &Path, writer_tag: &str) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.{writer_tag}.tmp"))
}

pub(super) fn write_synced(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Makes renames in `directory` durable. Best effort: not every file system supports it.
pub(super) fn sync_directory(directory: &Path) {
    if let Ok(handle) = File::open(directory) {
        let _ = handle.sync_all();
    }
}

/// Finishes what a crash interrupted: completes the renames of every committed epoch, then
/// deletes the hidden files no manifest names (epochs that never reached their commit point).
pub(super) fn recover(root: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root.join("_manifests"))? {
        let path = entry?.path();
        let is_manifest = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with("epoch-") && name.ends_with(".json"));
        if !is_manifest {
            continue;
        }
        let Ok(manifest) = serde_json::from_slice::<serde_json::Value>(&std::fs::read(&path)?)
        else {
            continue;
        };
        let files = manifest["files"].as_array().cloned().unwrap_or_default();
        for file in &files {
            let Some(relative) = file["file"].as_str() else {
                continue;
            };
            let final_path = root.join(relative);
            let temporary = match file["staged"].as_str() {
                Some(staged) => final_path.with_file_name(staged),
                // Epochs committed before temporary names carried the writer.
                None => {
                    let name = final_path.file_name().unwrap_or_default().to_string_lossy();
                    final_path.with_file_name(format!(".{name}.tmp"))
                }
            };
            if !final_path.exists() && temporary.exists() {
                std::fs::rename(&temporary, &final_path)?;
            }
        }
    }
    remove_hidden_files(root)
}

fn remove_hidden_files(directory: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(directory)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if entry.file_type()?.is_dir() {
            remove_hidden_files(&path)?;
        } else if name.starts_with('.') && name.ends_with(".tmp") {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}
