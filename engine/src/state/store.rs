//! Where checkpoints are kept: a directory of numbered files, each written whole and synced
//! before it is renamed into place, so a crash at any moment leaves the previous checkpoint
//! intact. The last few are kept; older ones are deleted once a newer one is in place.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// How many checkpoints are kept (the newest is the one a restart resumes from).
const KEPT: usize = 3;

/// The format of the files; a file of another format is refused rather than misread.
pub(crate) const FORMAT: u32 = 2;

/// One stored checkpoint.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredCheckpoint {
    pub format: u32,
    pub id: u64,
    /// Identifies the pipeline that wrote it (a hash of its text).
    pub pipeline: String,
    pub workers: usize,
    /// When it was taken (RFC 3339), for people.
    pub taken_at: String,
    /// The dataflow time it cut at; `None` for a run's last checkpoint (every input ended).
    pub cut: Option<u64>,
    /// What each key of the run held (`keys.rs`), so a restart of an edited pipeline can name
    /// the state the edit would drop.
    pub described: BTreeMap<String, String>,
    pub parts: BTreeMap<String, Vec<u8>>,
}

/// A local directory of checkpoints.
#[derive(Debug, Clone)]
pub struct StateDirectory {
    path: PathBuf,
}

impl StateDirectory {
    /// Opens (creating) the directory.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("creating the state directory {}", path.display()))?;
        Ok(StateDirectory {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self, id: u64) -> PathBuf {
        self.path.join(format!("checkpoint-{id:010}.bin"))
    }

    /// The ids of the checkpoints present, oldest first.
    fn ids(&self) -> anyhow::Result<Vec<u64>> {
        let mut ids: Vec<u64> = std::fs::read_dir(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?
            .filter_map(|entry| {
                entry
                    .ok()?
                    .file_name()
                    .to_str()?
                    .strip_prefix("checkpoint-")?
                    .strip_suffix(".bin")?
                    .parse()
                    .ok()
            })
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// The newest checkpoint, if any.
    pub fn latest(&self) -> anyhow::Result<Option<StoredCheckpoint>> {
        let Some(&id) = self.ids()?.last() else {
            return Ok(None);
        };
        let path = self.file(id);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let stored: StoredCheckpoint = bincode::deserialize(&bytes).with_context(|| {
            format!(
                "{} is not a checkpoint this version of vibelux can read",
                path.display()
            )
        })?;
        if stored.format != FORMAT {
            anyhow::bail!(
                "{} has checkpoint format {}, this version of vibelux reads format {FORMAT}",
                path.display(),
                stored.format
            );
        }
        Ok(Some(stored))
    }

    /// Stores a checkpoint durably, then deletes all but the newest few. Returns its size.
    pub fn store(&self, checkpoint: &StoredCheckpoint) -> anyhow::Result<u64> {
        let bytes = bincode::serialize(checkpoint).context("encoding a checkpoint")?;
        let path = self.file(checkpoint.id);
        let temporary = self
            .path
            .join(format!(".checkpoint-{:010}.tmp", checkpoint.id));
        let written = std::fs::File::create(&temporary).and_then(|mut file| {
            file.write_all(&bytes)?;
            file.sync_all()
        });
        if let Err(error) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(error).with_context(|| format!("writing {}", temporary.display()));
        }
        std::fs::rename(&temporary, &path)
            .with_context(|| format!("renaming {} into place", temporary.display()))?;
        if let Ok(directory) = std::fs::File::open(&self.path) {
            let _ = directory.sync_all();
        }
        let ids = self.ids()?;
        for old in ids.iter().take(ids.len().saturating_sub(KEPT)) {
            let _ = std::fs::remove_file(self.file(*old));
        }
        Ok(bytes.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(id: u64) -> StoredCheckpoint {
        StoredCheckpoint {
            format: FORMAT,
            id,
            pipeline: "p".into(),
            workers: 1,
            taken_at: String::new(),
            cut: Some(id * 10),
            described: BTreeMap::new(),
            parts: BTreeMap::from([("sink/out".to_string(), vec![id as u8])]),
        }
    }

    #[test]
    fn the_newest_checkpoint_is_read_back_and_only_a_few_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateDirectory::open(dir.path()).unwrap();
        assert!(store.latest().unwrap().is_none());
        for id in 1..=5 {
            store.store(&checkpoint(id)).unwrap();
        }
        let latest = store.latest().unwrap().unwrap();
        assert_eq!((latest.id, latest.cut), (5, Some(50)));
        assert_eq!(latest.parts["sink/out"], vec![5]);
        assert_eq!(store.ids().unwrap(), vec![3, 4, 5]);
    }

    #[test]
    fn a_file_that_is_not_a_checkpoint_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("checkpoint-0000000001.bin"), b"junk").unwrap();
        let error = StateDirectory::open(dir.path())
            .unwrap()
            .latest()
            .unwrap_err();
        assert!(
            format!("{error:#}").contains("checkpoint-0000000001.bin"),
            "{error:#}"
        );
    }
}
