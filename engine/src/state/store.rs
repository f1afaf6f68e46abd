//! Where checkpoints are kept: a local directory, or the same names as objects in
//! S3-compatible storage.
//!
//! Checkpoints are incremental. Each part is cut into content-defined chunks (`chunks.rs`)
//! stored once under their hash (`chunks/<hash>`); a checkpoint is a small manifest
//! (`checkpoint-NNNNNNNNNN.bin`) listing each part's chunks, so a checkpoint writes only the
//! chunks that changed since the last one. Chunks are written (and synced) before the manifest
//! that names them, and a manifest is written whole (temporary name, sync, rename; or one put),
//! so a crash at any moment leaves the previous checkpoint intact. The last few manifests are
//! kept; chunks no kept manifest names are deleted. A chunk is checked against its hash when
//! read: a damaged checkpoint is refused, not restored.
//!
//! Large parts are written chunk by chunk while workers encode them (`streamed.rs`), so they
//! are never held whole in memory; their chunks are synced with the rest before the manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};
use serde::{Deserialize, Serialize};

use vibelux_interfaces::checkpoint::{Part, chunk_name, chunks};

use super::streamed::ChunkWriter;

/// How many checkpoints are kept (the newest is the one a restart resumes from).
const KEPT: usize = 3;

/// The format of the manifests; a file of another format is refused rather than misread.
pub(crate) const FORMAT: u32 = 3;

/// Where chunks are, under the location.
pub(super) const CHUNKS: &str = "chunks";

/// One checkpoint: its parts whole as read back (`Vec<u8>`), or as handed over to be stored
/// ([`Part`]: whole, or already written chunk by chunk).
#[derive(Debug)]
pub struct StoredCheckpoint<P = Vec<u8>> {
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
    pub parts: BTreeMap<String, P>,
}

/// A checkpoint as stored: its parts as lists of chunks.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    id: u64,
    pipeline: String,
    workers: usize,
    taken_at: String,
    cut: Option<u64>,
    described: BTreeMap<String, String>,
    parts: BTreeMap<String, Vec<String>>,
}

/// What storing a checkpoint took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The checkpoint's size: every part, whole.
    pub size: u64,
    /// What was written: the chunks no earlier checkpoint had, and the manifest.
    pub written: u64,
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
    /// The chunks stored, once listed, and those parts not stored yet name.
    chunks: Arc<Mutex<KnownChunks>>,
    /// Writes the chunks of parts encoded straight into the store, once asked for.
    writer: Arc<std::sync::OnceLock<Arc<ChunkWriter>>>,
}

/// What the store knows of its chunks, shared by the checkpointer and the workers encoding
/// parts into it.
#[derive(Debug, Default)]
pub(super) struct KnownChunks {
    /// The chunks stored or being written, once listed: a chunk already there is not written
    /// again.
    pub(super) stored: Option<BTreeSet<String>>,
    /// The chunks named by parts of checkpoints not stored yet, by checkpoint: kept even when
    /// no stored checkpoint names them (a part encoded now may reuse a chunk that only an
    /// older, deleted checkpoint named).
    pub(super) pending: BTreeMap<u64, BTreeSet<String>>,
}

#[derive(Debug, Clone)]
pub(super) enum Backend {
    Local(PathBuf),
    Object(Arc<ObjectCheckpoints>),
}

/// Checkpoints as objects under a prefix. An object store's put is atomic (the object is there
/// whole or not at all), so no temporary name is needed.
#[derive(Debug)]
pub(super) struct ObjectCheckpoints {
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
            StateLocation::Directory(path) => {
                let chunks = path.join(CHUNKS);
                std::fs::create_dir_all(&chunks)
                    .with_context(|| format!("creating {}", chunks.display()))?;
                Backend::Local(path.clone())
            }
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
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("starting the object storage client")?;
                let objects = ObjectCheckpoints {
                    store: Box::new(store),
                    prefix: ObjectPath::from(path.trim_matches('/')),
                    runtime,
                };
                objects.list("").with_context(|| {
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
            chunks: Arc::default(),
            writer: Arc::default(),
        })
    }

    /// The writer that workers encode large parts into (started at the first call), for
    /// [`vibelux_interfaces::checkpoint::Checkpoints::set_chunk_store`].
    pub fn chunk_writer(&self) -> anyhow::Result<Arc<ChunkWriter>> {
        if let Some(writer) = self.writer.get() {
            return Ok(writer.clone());
        }
        self.list_chunks()?;
        let writer = Arc::new(ChunkWriter::start(
            self.backend.clone(),
            self.location.to_string(),
            self.chunks.clone(),
        )?);
        Ok(self.writer.get_or_init(|| writer).clone())
    }

    /// Lists the chunks stored, the first time they are needed.
    fn list_chunks(&self) -> anyhow::Result<()> {
        let mut known = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        if known.stored.is_none() {
            known.stored = Some(self.backend.list(CHUNKS)?.into_iter().collect());
        }
        Ok(())
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
        let mut ids: Vec<u64> = self
            .backend
            .list("")?
            .iter()
            .filter_map(|name| id_of(name))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    fn manifest(&self, id: u64) -> anyhow::Result<Manifest> {
        let name = format!("{}/{}", self.location, file_name(id));
        let bytes = self
            .backend
            .read(&file_name(id))
            .with_context(|| format!("reading {name}"))?;
        let manifest: Manifest = bincode::deserialize(&bytes).with_context(|| {
            format!("{name} is not a checkpoint this version of vibelux can read")
        })?;
        if manifest.format != FORMAT {
            anyhow::bail!(
                "{name} has checkpoint format {}, this version of vibelux reads format {FORMAT}",
                manifest.format
            );
        }
        Ok(manifest)
    }

    /// The newest checkpoint, if any.
    pub fn latest(&self) -> anyhow::Result<Option<StoredCheckpoint>> {
        let Some(&id) = self.ids()?.last() else {
            return Ok(None);
        };
        let manifest = self.manifest(id)?;
        let mut parts = BTreeMap::new();
        for (key, names) in manifest.parts {
            let mut part = Vec::new();
            for name in names {
                let path = format!("{CHUNKS}/{name}");
                let chunk = self.backend.read(&path).with_context(|| {
                    format!("reading {}/{path} of checkpoint {id}", self.location)
                })?;
                if chunk_name(&chunk) != name {
                    anyhow::bail!(
                        "{}/{path} of checkpoint {id} is damaged (its bytes do not match its name)",
                        self.location
                    );
                }
                part.extend_from_slice(&chunk);
            }
            parts.insert(key, part);
        }
        Ok(Some(StoredCheckpoint {
            format: manifest.format,
            id: manifest.id,
            pipeline: manifest.pipeline,
            workers: manifest.workers,
            taken_at: manifest.taken_at,
            cut: manifest.cut,
            described: manifest.described,
            parts,
        }))
    }

    /// Stores a checkpoint durably: the chunks not stored yet, then its manifest; then deletes
    /// all but the newest few manifests, and the chunks none of them names.
    pub fn store(&self, checkpoint: &StoredCheckpoint<Part>) -> anyhow::Result<Stored> {
        let stored = self.store_parts(checkpoint);
        let mut known = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        // Its chunks are named by its manifest now, or (had it failed) by nothing.
        known.pending = known.pending.split_off(&(checkpoint.id + 1));
        stored
    }

    fn store_parts(&self, checkpoint: &StoredCheckpoint<Part>) -> anyhow::Result<Stored> {
        // What workers wrote for it is written (or failed) before anything else is.
        let streamed = match self.writer.get() {
            Some(writer) => writer.flush(checkpoint.id)?,
            None => Vec::new(),
        };
        self.list_chunks()?;
        let mut known = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        let mut stored = Stored {
            size: 0,
            written: streamed.iter().map(|(_, length)| length).sum(),
        };
        let mut paths: Vec<String> = streamed.into_iter().map(|(path, _)| path).collect();
        let mut parts = BTreeMap::new();
        let mut new = Vec::new();
        {
            let listed = known.stored.as_ref().expect("listed");
            for (key, part) in &checkpoint.parts {
                let names = match part {
                    Part::Bytes(part) => {
                        stored.size += part.len() as u64;
                        let mut names = Vec::new();
                        for (name, chunk) in chunks(part) {
                            if !listed.contains(&name) && !new.iter().any(|(n, _)| n == &name) {
                                new.push((name.clone(), chunk));
                            }
                            names.push(name);
                        }
                        names
                    }
                    Part::Chunked { chunks, size } => {
                        stored.size += size;
                        chunks.clone()
                    }
                };
                parts.insert(key.clone(), names);
            }
        }
        for (name, chunk) in &new {
            let path = format!("{CHUNKS}/{name}");
            self.backend
                .write(&path, chunk, false)
                .with_context(|| format!("writing a chunk to {}", self.location))?;
            stored.written += chunk.len() as u64;
            paths.push(path);
        }
        // Synced together: one wait for the disk rather than one per chunk.
        self.backend.sync(&paths)?;
        let listed = known.stored.as_mut().expect("listed");
        listed.extend(new.into_iter().map(|(name, _)| name));
        let manifest = Manifest {
            format: checkpoint.format,
            id: checkpoint.id,
            pipeline: checkpoint.pipeline.clone(),
            workers: checkpoint.workers,
            taken_at: checkpoint.taken_at.clone(),
            cut: checkpoint.cut,
            described: checkpoint.described.clone(),
            parts,
        };
        let bytes = bincode::serialize(&manifest).context("encoding a checkpoint")?;
        stored.written += bytes.len() as u64;
        self.backend
            .write(&file_name(checkpoint.id), &bytes, true)
            .with_context(|| format!("writing {}/{}", self.location, file_name(checkpoint.id)))?;
        self.clean_up(&mut known, checkpoint.id)?;
        Ok(stored)
    }

    /// Deletes all but the newest few manifests, then the chunks no kept manifest names and no
    /// part of a later checkpoint (`pending` after `id`, the one just stored) is written with.
    fn clean_up(&self, known: &mut KnownChunks, id: u64) -> anyhow::Result<()> {
        let ids = self.ids()?;
        let (old, kept) = ids.split_at(ids.len().saturating_sub(KEPT));
        for old in old {
            if let Err(error) = self.backend.delete(&file_name(*old)) {
                tracing::warn!("cannot delete an old checkpoint: {error:#}");
            }
        }
        let mut named = BTreeSet::new();
        for kept in kept {
            named.extend(self.manifest(*kept)?.parts.into_values().flatten());
        }
        for (_, names) in known.pending.range(id + 1..) {
            named.extend(names.iter().cloned());
        }
        let stored = known.stored.as_mut().expect("listed");
        let unnamed: Vec<String> = stored.difference(&named).cloned().collect();
        for name in unnamed {
            match self.backend.delete(&format!("{CHUNKS}/{name}")) {
                Ok(()) => {
                    stored.remove(&name);
                }
                Err(error) => tracing::warn!("cannot delete an old chunk: {error:#}"),
            }
        }
        Ok(())
    }
}

impl Backend {
    /// The names directly under `folder` ("" for the top).
    fn list(&self, folder: &str) -> anyhow::Result<Vec<String>> {
        match self {
            Backend::Local(path) => {
                let path = path.join(folder);
                Ok(std::fs::read_dir(&path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                    .filter(|name| !name.starts_with('.'))
                    .collect())
            }
            Backend::Object(objects) => objects.list(folder),
        }
    }

    fn read(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        match self {
            Backend::Local(path) => {
                let path = path.join(name);
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
            }
            Backend::Object(objects) => objects.read(name),
        }
    }

    /// Writes `name` whole. Locally: under a temporary name, then renamed, and synced first
    /// when `sync` (otherwise [`Backend::sync`] syncs the folder's files later).
    pub(super) fn write(&self, name: &str, bytes: &[u8], sync: bool) -> anyhow::Result<()> {
        match self {
            Backend::Local(path) => write_file(path, name, bytes, sync),
            Backend::Object(objects) => objects.write(name, bytes),
        }
    }

    /// Makes the files written without a sync durable, then the folders naming them.
    fn sync(&self, names: &[String]) -> anyhow::Result<()> {
        let Backend::Local(path) = self else {
            return Ok(());
        };
        let mut folders = BTreeSet::new();
        for name in names {
            let file = path.join(name);
            std::fs::File::open(&file)
                .and_then(|opened| opened.sync_all())
                .with_context(|| format!("syncing {}", file.display()))?;
            folders.extend(file.parent().map(Path::to_path_buf));
        }
        for folder in folders {
            if let Ok(directory) = std::fs::File::open(&folder) {
                let _ = directory.sync_all();
            }
        }
        Ok(())
    }

    fn delete(&self, name: &str) -> anyhow::Result<()> {
        match self {
            Backend::Local(path) => std::fs::remove_file(path.join(name))
                .with_context(|| format!("deleting {}", path.join(name).display())),
            Backend::Object(objects) => objects.delete(name),
        }
    }
}

/// Writes a file whole: a temporary name, then renamed into place (synced first when `sync`),
/// so a crash while writing leaves no part-written file under the real name.
fn write_file(directory: &Path, name: &str, bytes: &[u8], sync: bool) -> anyhow::Result<()> {
    let path = directory.join(name);
    let folder = path.parent().unwrap_or(directory).to_path_buf();
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = folder.join(format!(".{file_name}.tmp"));
    let written = std::fs::File::create(&temporary).and_then(|mut file| {
        file.write_all(bytes)?;
        if sync { file.sync_all() } else { Ok(()) }
    });
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(error).with_context(|| format!("writing {}", temporary.display()));
    }
    std::fs::rename(&temporary, &path)
        .with_context(|| format!("renaming {} into place", temporary.display()))?;
    if sync && let Ok(directory) = std::fs::File::open(&folder) {
        let _ = directory.sync_all();
    }
    Ok(())
}

impl ObjectCheckpoints {
    fn object(&self, name: &str) -> ObjectPath {
        name.split('/')
            .fold(self.prefix.clone(), |path, part| path.join(part))
    }

    fn list(&self, folder: &str) -> anyhow::Result<Vec<String>> {
        let under = if folder.is_empty() {
            self.prefix.clone()
        } else {
            self.object(folder)
        };
        let listed: Vec<ObjectMeta> = self
            .runtime
            .block_on(self.store.list(Some(&under)).try_collect::<Vec<_>>())?;
        Ok(listed
            .iter()
            .filter(|meta| {
                // Only objects directly under the folder.
                meta.location
                    .prefix_match(&under)
                    .is_some_and(|mut rest| rest.next().is_some() && rest.next().is_none())
            })
            .filter_map(|meta| meta.location.filename().map(str::to_string))
            .collect())
    }

    fn read(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let location = self.object(name);
        let bytes = self
            .runtime
            .block_on(async { self.store.get(&location).await?.bytes().await })?;
        Ok(bytes.to_vec())
    }

    fn write(&self, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let location = self.object(name);
        self.runtime
            .block_on(self.store.put(&location, PutPayload::from(bytes.to_vec())))?;
        Ok(())
    }

    fn delete(&self, name: &str) -> anyhow::Result<()> {
        let location = self.object(name);
        self.runtime.block_on(self.store.delete(&location))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vibelux_interfaces::checkpoint::noise;

    fn checkpoint(id: u64) -> StoredCheckpoint<Part> {
        StoredCheckpoint {
            format: FORMAT,
            id,
            pipeline: "p".into(),
            workers: 1,
            taken_at: String::new(),
            cut: Some(id * 10),
            described: BTreeMap::new(),
            parts: BTreeMap::from([("sink/out".to_string(), vec![id as u8].into())]),
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

    fn part_checkpoint(id: u64, part: Vec<u8>) -> StoredCheckpoint<Part> {
        StoredCheckpoint {
            parts: BTreeMap::from([("node/x/0".to_string(), part.into())]),
            ..checkpoint(id)
        }
    }

    #[test]
    fn a_checkpoint_writes_only_the_chunks_that_changed_and_old_ones_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateDirectory::open(dir.path()).unwrap();
        let state = noise(16 << 20, 3);
        let first = store.store(&part_checkpoint(1, state.clone())).unwrap();
        assert_eq!(first.size, 16 << 20);
        assert!(first.written > 16 << 20);
        // The same state again: only the manifest is written.
        let same = store.store(&part_checkpoint(2, state.clone())).unwrap();
        assert!(same.written < 4096, "{same:?}");
        // A little changed in the middle: a chunk or two.
        let mut changed = state.clone();
        changed[8 << 20] ^= 0xff;
        let small = store.store(&part_checkpoint(3, changed.clone())).unwrap();
        assert!(small.written < 9 << 20, "{small:?}");
        assert_eq!(store.latest().unwrap().unwrap().parts["node/x/0"], changed);
        // Once no kept checkpoint names the first state's changed chunk, it is deleted.
        for id in 4..=6 {
            store.store(&part_checkpoint(id, changed.clone())).unwrap();
        }
        let names: BTreeSet<String> = store
            .manifest(6)
            .unwrap()
            .parts
            .into_values()
            .flatten()
            .collect();
        let on_disk: BTreeSet<String> = std::fs::read_dir(dir.path().join(CHUNKS))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(on_disk, names);
    }

    /// `bytes` as a worker leaves a part when the store is lent: encoded into the writer.
    fn encoded_into(writer: &ChunkWriter, id: u64, bytes: &[u8]) -> Part {
        use std::io::Write;
        use vibelux_interfaces::checkpoint::{ChunkStore, Chunker};
        let (mut chunks, mut size) = (Vec::new(), 0);
        let mut chunker = Chunker::new(|chunk: Vec<u8>| {
            size += chunk.len() as u64;
            chunks.push(writer.put(id, chunk).unwrap());
            Ok(())
        });
        // In the small pieces an encoder writes.
        for piece in bytes.chunks(4096) {
            chunker.write_all(piece).unwrap();
        }
        chunker.finish().unwrap();
        Part::Chunked { chunks, size }
    }

    #[test]
    fn a_part_encoded_into_the_store_reads_back_whole_and_outlives_the_clean_up_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateDirectory::open(dir.path()).unwrap();
        let writer = store.chunk_writer().unwrap();
        let (first, second) = (noise(12 << 20, 6), noise(6 << 20, 7));
        let encoded = |id, part| StoredCheckpoint {
            parts: BTreeMap::from([("node/x/0".to_string(), part)]),
            ..checkpoint(id)
        };
        let stored = store
            .store(&encoded(1, encoded_into(&writer, 1, &first)))
            .unwrap();
        assert_eq!(stored.size, 12 << 20);
        assert!(stored.written > 12 << 20, "{stored:?}");
        assert_eq!(store.latest().unwrap().unwrap().parts["node/x/0"], first);
        for id in 2..=3 {
            store.store(&part_checkpoint(id, second.clone())).unwrap();
        }
        // A worker encodes checkpoint 5 (the first state again: its chunks are still there,
        // so it only names them) while checkpoint 4, whose clean-up forgets checkpoint 1, is
        // stored: the chunks checkpoint 5 names are kept.
        let again = encoded_into(&writer, 5, &first);
        store.store(&part_checkpoint(4, second.clone())).unwrap();
        let stored = store.store(&encoded(5, again)).unwrap();
        assert!(stored.written < 4096, "{stored:?}");
        assert_eq!(store.latest().unwrap().unwrap().parts["node/x/0"], first);
        // And once checkpoint 5 is stored, nothing is left but what kept checkpoints name.
        for id in 6..=8 {
            store.store(&part_checkpoint(id, second.clone())).unwrap();
        }
        let on_disk = std::fs::read_dir(dir.path().join(CHUNKS)).unwrap().count();
        let named: BTreeSet<String> = store
            .manifest(8)
            .unwrap()
            .parts
            .into_values()
            .flatten()
            .collect();
        assert_eq!(on_disk, named.len());
    }

    #[test]
    fn a_final_part_encoded_into_the_store_stands_in_every_checkpoint_after_it() {
        use vibelux_interfaces::checkpoint::FINAL_CUT;
        let dir = tempfile::tempdir().unwrap();
        let store = StateDirectory::open(dir.path()).unwrap();
        let writer = store.chunk_writer().unwrap();
        let ended = noise(9 << 20, 8);
        let last = encoded_into(&writer, FINAL_CUT, &ended);
        for id in 1..=5 {
            let mut checkpoint = part_checkpoint(id, noise(1 << 20, 100 + id));
            checkpoint
                .parts
                .insert("node/ended/0".to_string(), last.clone());
            let stored = store.store(&checkpoint).unwrap();
            // Written (and synced) with the first checkpoint only.
            assert_eq!(stored.written > 9 << 20, id == 1, "{id}: {stored:?}");
            assert_eq!(
                store.latest().unwrap().unwrap().parts["node/ended/0"],
                ended
            );
        }
    }

    #[test]
    fn a_damaged_chunk_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateDirectory::open(dir.path()).unwrap();
        store.store(&part_checkpoint(1, noise(1 << 20, 4))).unwrap();
        let chunk = std::fs::read_dir(dir.path().join(CHUNKS))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut bytes = std::fs::read(&chunk).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&chunk, bytes).unwrap();
        let error = format!("{:#}", store.latest().unwrap_err());
        assert!(
            error.contains("is damaged") && error.contains("chunks/"),
            "{error}"
        );
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
