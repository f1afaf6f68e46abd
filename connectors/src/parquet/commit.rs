//! One warehouse's commits, shared by all of its writers (one per worker that writes).
//!
//! Each writer encodes its own rows into hidden files; the commit that makes them visible is
//! one manifest for all writers, so a reader sees every worker's rows of a checkpoint at once
//! or none of them. In a checkpointed run a writer *answers* a checkpoint with the files it has
//! staged; once that checkpoint is stored (which means every writer has answered it), the first
//! writer to hear so commits every file answered up to it, its own and the others', as one
//! epoch. Epoch numbers are given at the commit, in order, so no writer waits for another.
//! Without checkpoints each writer commits its files as an epoch of their own when its rollover
//! is due.
//!
//! A checkpoint part names the files it staged and the first epoch that could commit them, so
//! a restart from it tells committed files (named by a manifest from that epoch on) from those
//! the engine stopped before committing, which it commits then (`roll_forward`).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use datafusion::arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};
use vibelux_interfaces::sink::SinkError;

use super::epoch::{StagedEpoch, manifest_path, publish};
use super::folder::{lock_warehouse, recover};

/// A file a writer staged: written and synced under a hidden name in its partition's folder,
/// visible once an epoch's manifest names it and it is renamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StagedFile {
    /// Its hidden path.
    pub(super) staged: PathBuf,
    pub(super) rows: usize,
}

impl StagedFile {
    fn name(&self) -> String {
        self.staged
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    }
}

fn io(path: &Path, source: std::io::Error) -> SinkError {
    SinkError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The commits of one warehouse folder, held by every writer of one sink.
pub(super) struct Committer {
    root: PathBuf,
    schema: SchemaRef,
    /// In the names of the manifests' temporary files.
    tag: String,
    state: Mutex<CommitState>,
    /// Held while any writer lives: keeps a second engine out of the warehouse.
    _lock: File,
}

struct CommitState {
    next_epoch: u64,
    /// Files answered to a checkpoint and not committed yet, by the checkpoint they were first
    /// answered to.
    answered: BTreeMap<u64, Vec<StagedFile>>,
    /// The last checkpoint whose answered files are committed.
    committed_through: Option<u64>,
}

impl Committer {
    /// Takes the warehouse (its lock), finishes what a crash interrupted and finds the next
    /// epoch. `resumed` lists the files a stored checkpoint staged and the first epoch that could
    /// hold them: those no manifest names yet are committed first, before hidden files no
    /// manifest names are deleted.
    pub(super) fn open(
        root: &Path,
        schema: SchemaRef,
        tag: String,
        resumed: Option<(u64, Vec<StagedFile>)>,
    ) -> Result<Arc<Committer>, SinkError> {
        std::fs::create_dir_all(root.join("_manifests")).map_err(|e| io(root, e))?;
        let lock = lock_warehouse(root)?;
        let committer = Committer {
            root: root.to_path_buf(),
            schema,
            tag,
            state: Mutex::new(CommitState {
                next_epoch: next_epoch(root)?,
                answered: BTreeMap::new(),
                committed_through: None,
            }),
            _lock: lock,
        };
        if let Some((floor, staged)) = resumed {
            committer.roll_forward(floor, staged)?;
        }
        recover(root).map_err(|e| io(root, e))?;
        let mut state = committer.lock();
        state.next_epoch = next_epoch(root)?;
        drop(state);
        Ok(Arc::new(committer))
    }

    fn lock(&self) -> MutexGuard<'_, CommitState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The epoch the next commit will be; a checkpoint part records it as the first epoch that
    /// can hold the files it names.
    pub(super) fn next_epoch(&self) -> u64 {
        self.lock().next_epoch
    }

    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    /// Commits `files` as one epoch now (a run without checkpoints). On failure nothing is
    /// committed and the files are left where they are.
    pub(super) fn commit_now(&self, files: &[StagedFile]) -> Result<(), SinkError> {
        let mut state = self.lock();
        self.commit(&mut state, files)
    }

    /// Files a writer staged, answering checkpoint `cut`.
    pub(super) fn answer(&self, cut: u64, files: Vec<StagedFile>) {
        if !files.is_empty() {
            self.lock().answered.entry(cut).or_default().extend(files);
        }
    }

    /// The last checkpoint whose files are committed.
    pub(super) fn committed_through(&self) -> Option<u64> {
        self.lock().committed_through
    }

    /// Checkpoint `cut` is stored: commits every file answered to it or to an earlier one, by
    /// any writer, as one epoch. Returns the rows this call committed (none when another writer
    /// already did). On failure nothing is committed, and the next call tries again.
    pub(super) fn stored(&self, cut: u64) -> Result<u64, SinkError> {
        let mut state = self.lock();
        if state
            .committed_through
            .is_some_and(|through| through >= cut)
        {
            return Ok(0);
        }
        let files: Vec<StagedFile> = state
            .answered
            .range(..=cut)
            .flat_map(|(_, files)| files.iter().cloned())
            .collect();
        self.commit(&mut state, &files)?;
        state.answered = match cut.checked_add(1) {
            Some(after) => state.answered.split_off(&after),
            None => BTreeMap::new(),
        };
        state.committed_through = Some(cut);
        Ok(files.iter().map(|file| file.rows as u64).sum())
    }

    /// Writes the manifest of the next epoch naming `files` (the commit point), then renames
    /// them to their visible names, `part-EPOCH-NNNN.parquet` in their partition's folder.
    fn commit(&self, state: &mut CommitState, files: &[StagedFile]) -> Result<(), SinkError> {
        if files.is_empty() {
            return Ok(());
        }
        let epoch = state.next_epoch;
        let mut ordered: Vec<&StagedFile> = files.iter().collect();
        ordered.sort_by(|a, b| a.staged.cmp(&b.staged));
        let staged = StagedEpoch {
            epoch,
            files: ordered
                .iter()
                .enumerate()
                .map(|(number, file)| {
                    let visible = file
                        .staged
                        .with_file_name(format!("part-{epoch:06}-{number:04}.parquet"));
                    (file.staged.clone(), visible, file.rows)
                })
                .collect(),
        };
        publish(&self.root, &self.schema, &staged, &self.tag)?;
        state.next_epoch += 1;
        Ok(())
    }

    /// Commits the files a stored checkpoint staged that no manifest from `floor` on names (the
    /// engine stopped between storing the checkpoint and committing them).
    fn roll_forward(&self, floor: u64, staged: Vec<StagedFile>) -> Result<(), SinkError> {
        let committed = staged_names_from(&self.root, floor)?;
        let mut left = Vec::new();
        for file in staged {
            if committed.contains(&file.name()) {
                continue;
            }
            if !file.staged.exists() {
                return Err(io(
                    &file.staged,
                    std::io::Error::other(
                        "a file the last checkpoint staged is gone and no manifest names it; \
                         its rows cannot be committed (was the warehouse edited by hand?)",
                    ),
                ));
            }
            left.push(file);
        }
        if !left.is_empty() {
            tracing::info!(path = %self.root.display(), files = left.len(), "committing files the last checkpoint staged");
            let mut state = self.lock();
            self.commit(&mut state, &left)?;
        }
        Ok(())
    }
}

/// The epoch after the last one committed.
fn next_epoch(root: &Path) -> Result<u64, SinkError> {
    let manifests = root.join("_manifests");
    Ok(std::fs::read_dir(&manifests)
        .map_err(|e| io(&manifests, e))?
        .filter_map(|entry| epoch_of(&entry.ok()?.file_name().to_string_lossy()))
        .max()
        .map_or(0, |last| last + 1))
}

fn epoch_of(name: &str) -> Option<u64> {
    name.strip_prefix("epoch-")?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

/// The hidden names of the files committed by epochs `floor` and later.
fn staged_names_from(root: &Path, floor: u64) -> Result<HashSet<String>, SinkError> {
    let mut names = HashSet::new();
    let mut epoch = floor;
    loop {
        let path = manifest_path(root, epoch);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => break,
            Err(error) => return Err(io(&path, error)),
        };
        let manifest: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| io(&path, std::io::Error::other(e.to_string())))?;
        for file in manifest["files"].as_array().into_iter().flatten() {
            if let Some(staged) = file["staged"].as_str() {
                names.insert(staged.to_string());
            }
        }
        epoch += 1;
    }
    Ok(names)
}
