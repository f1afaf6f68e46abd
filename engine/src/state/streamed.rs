//! Parts written chunk by chunk as workers encode them.
//!
//! A part encoded whole is held in memory until it is stored: 50,000 `auto` detectors make a
//! part of about half a gigabyte, every checkpoint, on top of the detectors themselves. Encoded
//! through a [`vibelux_interfaces::checkpoint::Chunker`] instead, each chunk comes here as it is
//! cut: a chunk the store has is only named, a new one goes through a short queue to a thread
//! that writes it (unsynced), and a worker that outruns the disk waits on the queue rather than
//! piling chunks up. Before the checkpoint's manifest is written the checkpointer waits for the
//! queue to empty ([`ChunkWriter::flush`]) and syncs what it wrote, with the rest.
//!
//! A chunk a part names is kept from deletion until its checkpoint is stored, though no stored
//! checkpoint may name it yet (`KnownChunks::pending`); a chunk that could not be written is
//! forgotten, so no later part names it as stored, and its checkpoint fails. A final part's
//! chunks (put under `FINAL_CUT`) stand in every checkpoint after it: they are synced with the
//! first, kept from deletion for the rest of the run, and one that could not be written is
//! held and tried again at every checkpoint, since the participant that made it has ended.

use std::collections::BTreeMap;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};

use vibelux_interfaces::checkpoint::{ChunkStore, FINAL_CUT, chunk_name};

use super::store::{Backend, CHUNKS, KnownChunks};

/// Chunks queued for the writer thread (each up to 4 MiB) before a worker waits.
const QUEUED: usize = 4;

/// Writes the chunks workers put, on a thread of its own.
pub struct ChunkWriter {
    jobs: SyncSender<Job>,
    backend: Backend,
    location: String,
    known: Arc<Mutex<KnownChunks>>,
    progress: Arc<(Mutex<Progress>, Condvar)>,
}

impl std::fmt::Debug for ChunkWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkWriter")
    }
}

struct Job {
    id: u64,
    name: String,
    chunk: Vec<u8>,
}

#[derive(Default)]
struct Progress {
    queued: u64,
    done: u64,
    /// Per checkpoint: the paths written, with their lengths.
    written: BTreeMap<u64, Vec<(String, u64)>>,
    /// Per checkpoint: why a chunk could not be written.
    failed: BTreeMap<u64, String>,
    /// Chunks of final parts that could not be written, to try again.
    finals_unwritten: Vec<(String, Vec<u8>)>,
}

impl ChunkWriter {
    pub(super) fn start(
        backend: Backend,
        location: String,
        known: Arc<Mutex<KnownChunks>>,
    ) -> anyhow::Result<Self> {
        let (jobs, queue) = sync_channel::<Job>(QUEUED);
        let progress: Arc<(Mutex<Progress>, Condvar)> = Arc::default();
        let (writer_known, writer_progress) = (known.clone(), progress.clone());
        let (writer_backend, writer_location) = (backend.clone(), location.clone());
        std::thread::Builder::new()
            .name("checkpoint-chunks".into())
            .spawn(move || {
                for Job { id, name, chunk } in queue {
                    let path = format!("{CHUNKS}/{name}");
                    let result = writer_backend.write(&path, &chunk, false);
                    if result.is_err() {
                        let mut known = writer_known.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(stored) = known.stored.as_mut() {
                            stored.remove(&name);
                        }
                    }
                    let (progress, done) = &*writer_progress;
                    let mut progress = progress.lock().unwrap_or_else(|p| p.into_inner());
                    match result {
                        Ok(()) => progress
                            .written
                            .entry(id)
                            .or_default()
                            .push((path, chunk.len() as u64)),
                        Err(error) => {
                            progress.failed.entry(id).or_insert_with(|| {
                                format!("writing a chunk to {writer_location}: {error:#}")
                            });
                        }
                    }
                    progress.done += 1;
                    done.notify_all();
                }
            })?;
        Ok(ChunkWriter {
            jobs,
            backend,
            location,
            known,
            progress,
        })
    }

    /// Waits until every chunk queued so far is written; returns what was written for
    /// checkpoint `id` and for final parts (paths and lengths, to sync), or why some of it
    /// could not be. What was written for earlier checkpoints, which were given up, is
    /// forgotten.
    pub(super) fn flush(&self, id: u64) -> anyhow::Result<Vec<(String, u64)>> {
        let (progress, done) = &*self.progress;
        let progress = progress.lock().unwrap_or_else(|p| p.into_inner());
        let mut progress = done
            .wait_while(progress, |progress| progress.done < progress.queued)
            .unwrap_or_else(|p| p.into_inner());
        let mut written = progress.written.remove(&id).unwrap_or_default();
        written.extend(progress.written.remove(&FINAL_CUT).unwrap_or_default());
        let failed = progress.failed.remove(&id);
        progress.failed.remove(&FINAL_CUT);
        progress.written = progress.written.split_off(&(id + 1));
        progress.failed = progress.failed.split_off(&(id + 1));
        if let Some(why) = failed {
            anyhow::bail!(why);
        }
        // Final parts' chunks that could not be written: no one will make them again.
        let unwritten = std::mem::take(&mut progress.finals_unwritten);
        for (name, chunk) in unwritten {
            let path = format!("{CHUNKS}/{name}");
            if let Err(error) = self.backend.write(&path, &chunk, false) {
                progress.finals_unwritten.push((name, chunk));
                anyhow::bail!("writing a chunk to {}: {error:#}", self.location);
            }
            let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            known
                .stored
                .get_or_insert_with(Default::default)
                .insert(name);
            written.push((path, chunk.len() as u64));
        }
        Ok(written)
    }
}

impl ChunkStore for ChunkWriter {
    fn put(&self, id: u64, chunk: Vec<u8>) -> Result<String, String> {
        let name = chunk_name(&chunk);
        {
            let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            known.pending.entry(id).or_default().insert(name.clone());
            let stored = known.stored.get_or_insert_with(Default::default);
            if !stored.insert(name.clone()) {
                return Ok(name);
            }
        }
        self.progress
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .queued += 1;
        let sent = self.jobs.send(Job {
            id,
            name: name.clone(),
            chunk,
        });
        if sent.is_err() {
            let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(stored) = known.stored.as_mut() {
                stored.remove(&name);
            }
            drop(known);
            let (progress, done) = &*self.progress;
            let mut progress = progress.lock().unwrap_or_else(|p| p.into_inner());
            progress.done += 1;
            progress
                .failed
                .entry(id)
                .or_insert_with(|| "the chunk writer stopped".to_string());
            done.notify_all();
            return Err("the checkpoint chunk writer stopped".to_string());
        }
        Ok(name)
    }
}
