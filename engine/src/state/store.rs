//! Where checkpoints are kept: a directory of numbered files, each written whole and synced
//! before it is renamed into place, so a crash at any moment leaves the previous checkpoint
//! intact; or the same names as objects in S3-compatible storage, where a put is atomic. The
//! last few are kept; older ones are deleted once a newer one is in place.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use anyhow::Context;
use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};
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

/// Where a run's checkpoints are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLocation {
    /// A local directory.
    Directory(PathBuf),
    /// S3-compatible object storage, `s3://bucket/prefix`, for clusters whose processes come
    /// and go. Credentials, region and endpoint come from the usual `AWS_*` variables
    /// (`AWS_ENDPOINT_URL` for MinIO, Ceph or other S3-compatible servers, `AWS_ALLOW_HTTP`
    /// for one without TLS). What sources must keep on local disk (the MQTT journal) goes to
    /// `local`.
    Object { url: String, local: PathBuf },
}

impl StateLocation {
    /// Reads `--state`: an `s3://` URL, or a directory. `local` is where an object store's run
    /// keeps what must stay on local disk.
    pub fn parse(text: &str, local: PathBuf) -> Self {
        if text.starts_with("s3://") || text.starts_with("s3a://") {
            StateLocation::Object {
                url: text.to_string(),
                local,
            }
        } else {
            StateLocation::Directory(PathBuf::from(text))
        }
    }

    /// Where sources keep what must stay on local disk.
    pub fn local_directory(&self) -> &Path {
        match self {
            StateLocation::Directory(path) => path,
            StateLocation::Object { local, .. } => local,
        }
    }
}

impl std::fmt::Display for StateLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateLocation::Directory(path) => write!(f, "{}", path.display()),
            StateLocation::Object { url, .. } => f.write_str(url),
        }
    }
}

/// The checkpoints of a run: in a local directory or in object storage.
#[derive(Debug, Clone)]
pub struct StateDirectory {
    location: StateLocation,
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Local(PathBuf),
    Object(Arc<ObjectCheckpoints>),
}

/// Checkpoints as objects `PREFIX/checkpoint-NNNNNNNNNN.bin`. An object store's put is atomic
/// (the object is there whole or not at all), so no temporary name is needed.
#[derive(Debug)]
struct ObjectCheckpoints {
    store: Box<dyn ObjectStore>,
    prefix: ObjectPath,
    /// The store's client is async; the checkpointer is a plain thread, and waits on this.
    runtime: tokio::runtime::Runtime,
}

fn file_name(id: u64) -> String {
    format!("checkpoint-{id:010}.bin")
}

fn id_of(name: &str) -> Option<u64> {
    name.strip_prefix("checkpoint-")?
        .strip_suffix(".bin")?
        .parse()
        .ok()
}

impl StateDirectory {
    /// Opens (creating) the location. Object storage is listed once, so that a wrong bucket,
    /// endpoint or credentials fail the run at start, not at its first checkpoint.
    pub fn open_location(location: &StateLocation) -> anyhow::Result<Self> {
        let local = location.local_directory();
        std::fs::create_dir_all(local)
            .with_context(|| format!("creating the state directory {}", local.display()))?;
        let backend = match location {
            StateLocation::Directory(path) => Backend::Local(path.clone()),
            StateLocation::Object { url, .. } => {
                let (_, path) = url
                    .split_once("://")
                    .and_then(|(_, rest)| rest.split_once('/'))
                    .unwrap_or_default();
                // Retried briefly: a checkpoint that cannot be stored is tried again at the
                // next interval, and a wrong endpoint should fail the start in seconds.
                let retry = RetryConfig {
                    backoff: BackoffConfig::default(),
                    max_retries: 3,
                    retry_timeout: std::time::Duration::from_secs(20),
                };
                let store = AmazonS3Builder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry)
                    .build()
                    .with_context(|| format!("configuring object storage for {url}"))?;
                let prefix = ObjectPath::from(path.trim_matches('/'));
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("starting the object storage client")?;
                let objects = ObjectCheckpoints {
                    store: Box::new(store),
                    prefix,
                    runtime,
                };
                objects.ids().with_context(|| {
                    format!(
                        "listing {url} (are the bucket, AWS_ENDPOINT_URL and the credentials right?)"
                    )
                })?;
                Backend::Object(Arc::new(objects))
            }
        };
        Ok(StateDirectory {
            location: location.clone(),
            backend,
        })
    }

    /// Opens (creating) a local directory.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Self::open_location(&StateLocation::Directory(path.to_path_buf()))
    }

    /// Where sources keep what must stay on local disk.
    pub fn path(&self) -> &Path {
        self.location.local_directory()
    }

    /// The ids of the checkpoints present, oldest first.
    fn ids(&self) -> anyhow::Result<Vec<u64>> {
        match &self.backend {
            Backend::Local(path) => {
                let mut ids: Vec<u64> = std::fs::read_dir(path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .filter_map(|entry| id_of(entry.ok()?.file_name().to_str()?))
                    .collect();
                ids.sort_unstable();
                Ok(ids)
            }
            Backend::Object(objects) => objects.ids(),
        }
    }

    /// The newest checkpoint, if any.
    pub fn latest(&self) -> anyhow::Result<Option<StoredCheckpoint>> {
        let Some(&id) = self.ids()?.last() else {
            return Ok(None);
        };
        let (bytes, name) = match &self.backend {
            Backend::Local(path) => {
                let path = path.join(file_name(id));
                let bytes =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                (bytes, path.display().to_string())
            }
            Backend::Object(objects) => {
                let name = format!("{}/{}", self.location, file_name(id));
                (
                    objects
                        .read(id)
                        .with_context(|| format!("reading {name}"))?,
                    name,
                )
            }
        };
        let stored: StoredCheckpoint = bincode::deserialize(&bytes).with_context(|| {
            format!("{name} is not a checkpoint this version of vibelux can read")
        })?;
        if stored.format != FORMAT {
            anyhow::bail!(
                "{name} has checkpoint format {}, this version of vibelux reads format {FORMAT}",
                stored.format
            );
        }
        Ok(Some(stored))
    }

    /// Stores a checkpoint durably, then deletes all but the newest few. Returns its size.
    pub fn store(&self, checkpoint: &StoredCheckpoint) -> anyhow::Result<u64> {
        let bytes = bincode::serialize(checkpoint).context("encoding a checkpoint")?;
        let size = bytes.len() as u64;
        match &self.backend {
            Backend::Local(path) => store_file(path, checkpoint.id, &bytes)?,
            Backend::Object(objects) => objects.write(checkpoint.id, bytes).with_context(|| {
                format!("writing {}/{}", self.location, file_name(checkpoint.id))
            })?,
        }
        let ids = self.ids()?;
        for old in ids.iter().take(ids.len().saturating_sub(KEPT)) {
            match &self.backend {
                Backend::Local(path) => {
                    let _ = std::fs::remove_file(path.join(file_name(*old)));
                }
                Backend::Object(objects) => {
                    if let Err(error) = objects.delete(*old) {
                        tracing::warn!("cannot delete an old checkpoint: {error:#}");
                    }
                }
            }
        }
        Ok(size)
    }
}

/// Writes a checkpoint file whole: a temporary name, synced, renamed into place, so a crash
/// while writing leaves the previous checkpoint intact.
fn store_file(directory: &Path, id: u64, bytes: &[u8]) -> anyhow::Result<()> {
    let path = directory.join(file_name(id));
    let temporary = directory.join(format!(".checkpoint-{id:010}.tmp"));
    let written = std::fs::File::create(&temporary).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(error).with_context(|| format!("writing {}", temporary.display()));
    }
    std::fs::rename(&temporary, &path)
        .with_context(|| format!("renaming {} into place", temporary.display()))?;
    if let Ok(directory) = std::fs::File::open(directory) {
        let _ = directory.sync_all();
    }
    Ok(())
}

impl ObjectCheckpoints {
    fn object(&self, id: u64) -> ObjectPath {
        self.prefix.clone().join(file_name(id))
    }

    fn ids(&self) -> anyhow::Result<Vec<u64>> {
        let listed: Vec<ObjectMeta> = self
            .runtime
            .block_on(self.store.list(Some(&self.prefix)).try_collect::<Vec<_>>())?;
        let mut ids: Vec<u64> = listed
            .iter()
            .filter(|meta| {
                meta.location
                    .prefix_match(&self.prefix)
                    .is_some_and(|mut rest| {
                        // Only objects directly under the prefix.
                        rest.next().is_some() && rest.next().is_none()
                    })
            })
            .filter_map(|meta| id_of(meta.location.filename()?))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    fn read(&self, id: u64) -> anyhow::Result<Vec<u8>> {
        let location = self.object(id);
        let bytes = self
            .runtime
            .block_on(async { self.store.get(&location).await?.bytes().await })?;
        Ok(bytes.to_vec())
    }

    fn write(&self, id: u64, bytes: Vec<u8>) -> anyhow::Result<()> {
        let location = self.object(id);
        self.runtime
            .block_on(self.store.put(&location, PutPayload::from(bytes)))?;
        Ok(())
    }

    fn delete(&self, id: u64) -> anyhow::Result<()> {
        let location = self.object(id);
        self.runtime.block_on(self.store.delete(&location))?;
        Ok(())
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
