//! Consistent checkpoints of a running dataflow: how sources, operators and sinks agree on a cut.
//!
//! Timely time is event time (the watermark, in milliseconds), so a *cut* is a timestamp `C`: a
//! checkpoint holds every participant's state after exactly the data stamped before `C`. Choosing
//! `C` takes two steps. When a checkpoint is requested, every source reports the time its
//! capability holds and stops downgrading it (it keeps reading and emitting, at that time); once
//! all have reported, `C` is one past the latest of them, so no source has emitted anything at
//! `C` or later yet. Once every operator can know `C` (at once in one process; in a cluster,
//! once every process has acknowledged it), each source records its position (and its
//! watermark) at the moment it first moves to `C` or later. Each stateful operator, once its input frontier reaches `C`,
//! snapshots its state; data at `C` or later that arrived early waits beside it until then. Each
//! sink delivers what came before `C` and records how far it got (a file's length, a warehouse
//! epoch staged). Because data stamped before `C` is exactly what the sources emitted before
//! their positions, restoring all parts and reading on from those positions loses nothing and
//! repeats nothing.
//!
//! A participant whose input has ended for good (a replay read to its end, a stopped run) leaves
//! a *final* part, which stands for it in every later checkpoint. When every participant is final
//! the run's last checkpoint is complete: a clean stop resumes open windows instead of losing them.
//!
//! This type is the meeting point only; the engine stores checkpoints and restores them. In a
//! cluster of processes each process has its own, and process 0's decides for all: the others
//! relay what their participants do to it and follow its decisions (`relay.rs`).
//!
//! A part is bytes handed over whole, or, where the engine lends a [`ChunkStore`], encoded
//! straight into storage chunk by chunk (`chunks.rs`), so a large state is never held twice
//! in memory while it is checkpointed.

mod chunks;
mod encoding;
mod participant;
mod relay;

pub use chunks::{Chunker, chunk_name, chunks, cut_points, noise};
pub use encoding::{InKeyOrder, decode, encode, in_key_order, routed_to, serialize_in_key_order};
pub use participant::Participant;
pub use relay::{Relayed, Role};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The number a final part answers to: it stands for the participant in the run's last
/// checkpoint, whatever that checkpoint's number turns out to be.
pub const FINAL_CUT: u64 = u64::MAX;

/// A checkpoint being taken: its number and the dataflow time it cuts at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    pub id: u64,
    pub time: u64,
}

/// What a source does about checkpoints at one activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceTurn {
    /// Nothing asked: move on freely.
    Free,
    /// A checkpoint is being agreed: keep the capability where it is.
    Hold,
    /// Record the position when moving to the cut's time or later (now, if already there).
    Cut(Cut),
}

/// What a source leaves in a checkpoint: where its reader was and what its watermark knew.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourcePart {
    /// The reader's own description of its position (see `SourceReader::position`).
    pub position: Vec<u8>,
    /// What the operator keeps beside the reader: the watermark of the source's partitions, a
    /// table's rows.
    pub state: Vec<u8>,
    /// Whether the reader had read its input to the end.
    pub finished: bool,
}

/// A checkpoint that every participant has answered.
#[derive(Debug)]
pub struct Completed {
    pub id: u64,
    /// `None` when every part is final (the run has ended).
    pub cut: Option<Cut>,
    pub parts: BTreeMap<String, Part>,
}

/// One participant's part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Encoded whole, to be cut into chunks and stored. Shared: a final part stands in every
    /// checkpoint after it without being copied into each.
    Bytes(std::sync::Arc<Vec<u8>>),
    /// Encoded straight into the [`ChunkStore`]: the chunks' names, in order.
    Chunked { chunks: Vec<String>, size: u64 },
}

impl From<Vec<u8>> for Part {
    fn from(bytes: Vec<u8>) -> Self {
        Part::Bytes(std::sync::Arc::new(bytes))
    }
}

/// Where participants write large parts chunk by chunk while they encode them: the engine's
/// checkpoint store. A chunk put for checkpoint `id` is stored, under the name returned, by
/// the time that checkpoint is; a chunk the store holds already is not written again.
pub trait ChunkStore: Send + Sync {
    fn put(&self, id: u64, chunk: Vec<u8>) -> Result<String, String>;
}

#[derive(Default)]
struct Progress {
    participants: BTreeSet<String>,
    sources: BTreeSet<String>,
    /// Workers that have built their dataflow (and registered its participants).
    built: usize,
    next_id: u64,
    /// The checkpoint whose cut is being agreed, and the sources' held times (`None`: finished).
    requested: Option<u64>,
    reports: HashMap<String, Option<u64>>,
    cut: Option<Cut>,
    /// Whether sources may move past the cut: every process knows it, so no operator can see
    /// its frontier pass the cut before it knows of the cut (`relay.rs`).
    released: bool,
    /// The processes that acknowledged the cut under way (the deciding process only).
    acknowledged: usize,
    parts: BTreeMap<String, Part>,
    finals: BTreeMap<String, Part>,
    /// For each participant that ended: the latest time it emitted rows at. Its final part
    /// stands for it from then on, so every later cut must come after them: a source reads
    /// nothing again after a restore, an operator that ended emits nothing again.
    ended_at: HashMap<String, u64>,
    /// A participant that could not leave a consistent part (a sink that gave up).
    spoiled: Option<String>,
    completed: u64,
    /// Whether the run's last checkpoint (every part final) was handed out.
    final_taken: bool,
    /// Its number, once handed out.
    final_id: Option<u64>,
    /// Why the last checkpoint could not be stored, while it could not.
    failure: Option<String>,
}

/// The checkpoints of one run, shared by its workers and the thread that stores them.
pub struct Checkpoints {
    progress: Mutex<Progress>,
    changed: Condvar,
    /// A change counter read without the lock on every activation: participants look further
    /// only when it moved.
    generation: AtomicU64,
    /// The cut being taken (id 0: none), for operators' per-batch checks.
    cut_id: AtomicU64,
    cut_time: AtomicU64,
    completed: AtomicU64,
    /// Parts of the checkpoint this run resumes from.
    restored: Mutex<BTreeMap<String, Vec<u8>>>,
    /// The worker count of that checkpoint, when it is not this run's: each worker's keyed
    /// state is then gathered from every old worker's part (see [`Checkpoints::restored_parts`]).
    rescaled_from: Option<usize>,
    /// Which part of the dataflow each participant's key is in ([`Checkpoints::set_groups`]).
    groups: Mutex<HashMap<String, usize>>,
    /// The cut's time in each group, while a cut is under way.
    group_times: Vec<AtomicU64>,
    /// This process's place among a cluster's (alone, deciding, or following), and what it
    /// has to tell the others.
    relay: relay::Relay,
    /// Where this process's participants write large parts as they encode them (the process
    /// that stores checkpoints only).
    chunk_store: std::sync::OnceLock<std::sync::Arc<dyn ChunkStore>>,
}

/// Groups beyond this share the last one's cut.
const MAX_GROUPS: usize = 64;

impl std::fmt::Debug for Checkpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoints")
            .field("completed", &self.completed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Checkpoints {
    /// Checkpoints numbered after `last_id`, resuming from `restored` parts.
    pub fn new(last_id: u64, restored: BTreeMap<String, Vec<u8>>) -> Self {
        Checkpoints {
            progress: Mutex::new(Progress {
                next_id: last_id + 1,
                completed: last_id,
                ..Progress::default()
            }),
            changed: Condvar::new(),
            generation: AtomicU64::new(0),
            cut_id: AtomicU64::new(0),
            cut_time: AtomicU64::new(0),
            completed: AtomicU64::new(last_id),
            restored: Mutex::new(restored),
            rescaled_from: None,
            groups: Mutex::default(),
            group_times: (0..MAX_GROUPS).map(|_| AtomicU64::new(0)).collect(),
            relay: relay::Relay::default(),
            chunk_store: std::sync::OnceLock::new(),
        }
    }

    /// Lends the store that participants encode large parts into (see [`ChunkStore`]).
    pub fn set_chunk_store(&self, store: std::sync::Arc<dyn ChunkStore>) {
        let _ = self.chunk_store.set(store);
    }

    /// The store to encode parts into: only where checkpoints are stored (another process of
    /// a cluster relays its parts whole).
    pub fn chunk_store(&self) -> Option<&std::sync::Arc<dyn ChunkStore>> {
        match self.role() {
            Role::Follower => None,
            _ => self.chunk_store.get(),
        }
    }

    /// Says which parts of the dataflow never exchange data: each participant key (without its
    /// worker) with its group. Each group is cut at its own time, so sources on different
    /// clocks (a simulation at 60× beside a PLC polled in real time) can be checkpointed
    /// together: a cut only needs to be consistent where data meets. A key in no group is cut
    /// at the latest time of all.
    pub fn set_groups(&self, groups: HashMap<String, usize>) {
        *self.groups.lock().unwrap_or_else(|p| p.into_inner()) = groups
            .into_iter()
            .map(|(key, group)| (key, group.min(MAX_GROUPS - 1)))
            .collect();
    }

    /// The group of a participant's key (`…/<worker>` or not).
    fn group_of(&self, key: &str) -> Option<usize> {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups.get(key).copied().or_else(|| {
            let (unit, worker) = key.rsplit_once('/')?;
            worker
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| groups.get(unit).copied())
                .flatten()
        })
    }

    /// The cut under way as `group` sees it (the latest time of all for no group).
    pub fn current_cut_in(&self, group: Option<usize>) -> Option<Cut> {
        let cut = self.current_cut()?;
        Some(match group {
            Some(group) => Cut {
                id: cut.id,
                time: self.group_times[group].load(Ordering::Acquire),
            },
            None => cut,
        })
    }

    /// Resumes a checkpoint taken with `checkpoint_workers` by a run of `workers`.
    pub fn with_workers(mut self, checkpoint_workers: usize, workers: usize) -> Self {
        self.rescaled_from = (checkpoint_workers != workers).then_some(checkpoint_workers);
        self
    }

    /// The worker count of the checkpoint resumed from, when the run has another.
    pub fn rescaled_from(&self) -> Option<usize> {
        self.rescaled_from
    }

    /// Every part a per-worker key (`…/<worker>`) restores from: its own part, or, when the
    /// worker count changed since the checkpoint, every old worker's part of the same key, for
    /// the participant to keep what is now routed to it. Parts stay until a checkpoint of this
    /// run is stored, since every new worker reads them.
    pub fn restored_parts(&self, key: &str) -> Vec<Vec<u8>> {
        let (Some(old_workers), Some((base, _))) = (self.rescaled_from, key.rsplit_once('/'))
        else {
            return self.take_restored(key).into_iter().collect();
        };
        let restored = self.restored.lock().unwrap_or_else(|p| p.into_inner());
        (0..old_workers)
            .filter_map(|worker| restored.get(&format!("{base}/{worker}")).cloned())
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
        self.changed.notify_all();
    }

    /// The part `key` left in the checkpoint this run resumes from (taken once).
    pub fn take_restored(&self, key: &str) -> Option<Vec<u8>> {
        self.restored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key)
    }

    /// A copy of the part `key` left in the checkpoint this run resumes from.
    pub fn restored_part(&self, key: &str) -> Option<Vec<u8>> {
        self.restored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Registers a participant; sources also take part in agreeing on each cut.
    pub fn register(&self, key: &str, source: bool) {
        let mut progress = self.lock();
        progress.participants.insert(key.to_string());
        if source {
            progress.sources.insert(key.to_string());
        }
        self.to_leader(Relayed::Registered {
            key: key.to_string(),
            source,
        });
    }

    /// A worker has built its dataflow: all its participants are registered.
    pub fn built(&self) {
        let mut progress = self.lock();
        progress.built += 1;
        self.to_leader(Relayed::Built);
        drop(progress);
        self.changed();
    }

    /// A counter that moves whenever a checkpoint starts, is cut or completes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The cut being taken, read per batch by operators (a cheap load, ordered after the
    /// batch's arrival, so a batch sent at or after the cut always sees it).
    pub fn current_cut(&self) -> Option<Cut> {
        let id = self.cut_id.load(Ordering::Acquire);
        (id != 0).then(|| Cut {
            id,
            time: self.cut_time.load(Ordering::Acquire),
        })
    }

    /// The last checkpoint stored.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Acquire)
    }

    /// Why the last checkpoint could not be stored, if it could not.
    pub fn failure(&self) -> Option<String> {
        self.lock().failure.clone()
    }

    /// A source's turn: `held` is the time its capability holds now.
    pub fn source_turn(&self, key: &str, held: u64) -> SourceTurn {
        let group = self.group_of(key);
        let in_group = |cut: Cut| Cut {
            id: cut.id,
            time: group.map_or(cut.time, |group| {
                self.group_times[group].load(Ordering::Acquire)
            }),
        };
        let mut progress = self.lock();
        if let Some(cut) = progress.cut {
            return if progress.parts.contains_key(key) {
                SourceTurn::Free
            } else if progress.released {
                SourceTurn::Cut(in_group(cut))
            } else {
                SourceTurn::Hold
            };
        }
        if progress.requested.is_none() {
            return SourceTurn::Free;
        }
        if !progress.reports.contains_key(key) {
            progress.reports.insert(key.to_string(), Some(held));
            if let Some(id) = progress.requested {
                self.to_leader(Relayed::Reported {
                    id,
                    key: key.to_string(),
                    held,
                });
            }
        }
        self.decide_cut(&mut progress);
        match progress.cut {
            Some(cut) if progress.released => SourceTurn::Cut(in_group(cut)),
            _ => SourceTurn::Hold,
        }
    }

    /// Once every source has reported, each group's cut is one past the latest time its
    /// sources hold (the cut of all: past the latest of every source).
    fn decide_cut(&self, progress: &mut Progress) {
        // A follower learns the cut from the process that decides it.
        if self.role() == Role::Follower {
            return;
        }
        let Some(id) = progress.requested else { return };
        let reported = |source: &String| {
            progress.reports.contains_key(source) || progress.finals.contains_key(source)
        };
        if progress.cut.is_some() || !progress.sources.iter().all(reported) {
            return;
        }
        // The times sources hold, and the last times of participants that ended: one that
        // ended emits nothing again after a restore, so what it emitted must all be before
        // the cut (a worker's share of a file can end long before another's; a window
        // operator whose inputs ended emits its open windows at their ends).
        let times: Vec<(&String, u64)> = progress
            .reports
            .iter()
            .filter_map(|(source, held)| held.map(|held| (source, held)))
            .chain(
                progress
                    .ended_at
                    .iter()
                    .map(|(source, time)| (source, *time)),
            )
            .collect();
        let mut latest_in: HashMap<usize, u64> = HashMap::new();
        for (source, held) in &times {
            if let Some(group) = self.group_of(source) {
                let latest = latest_in.entry(group).or_insert(*held);
                *latest = (*latest).max(*held);
            }
        }
        for (group, time) in self.group_times.iter().enumerate() {
            let cut = latest_in
                .get(&group)
                .map_or(0, |latest| latest.saturating_add(1));
            time.store(cut, Ordering::Release);
        }
        let latest = times.iter().map(|(_, time)| *time).max();
        let time = latest.map_or(0, |time| time.saturating_add(1));
        tracing::debug!(id, time, reports = ?progress.reports, "checkpoint cut decided");
        progress.cut = Some(Cut { id, time });
        // Alone, every operator reads the cut from here; a cluster's other processes learn
        // it from a message, and sources wait for all of them to acknowledge it.
        progress.acknowledged = 0;
        progress.released = self.followers() == 0;
        self.cut_time.store(time, Ordering::Release);
        self.cut_id.store(id, Ordering::Release);
        self.to_followers(Relayed::Cut {
            cut: Cut { id, time },
            groups: self.group_cut_times(),
        });
        self.changed();
    }

    /// Leaves `key`'s part of checkpoint `id`.
    pub fn submit(&self, key: &str, id: u64, part: Vec<u8>) {
        tracing::debug!(key, id, "checkpoint part");
        let mut progress = self.lock();
        if progress.cut.is_some_and(|cut| cut.id == id) {
            if self.role() == Role::Follower {
                // Kept by the process that stores checkpoints; here only that it was answered.
                progress.parts.insert(key.to_string(), Vec::new().into());
                self.to_leader(Relayed::Part {
                    id,
                    key: key.to_string(),
                    part,
                });
            } else {
                progress.parts.insert(key.to_string(), part.into());
            }
            self.changed();
        }
    }

    /// Leaves `key`'s part of checkpoint `id`, written to the [`ChunkStore`] as it was encoded.
    pub fn submit_chunked(&self, key: &str, id: u64, chunks: Vec<String>, size: u64) {
        tracing::debug!(key, id, size, "checkpoint part, chunked");
        let mut progress = self.lock();
        if progress.cut.is_some_and(|cut| cut.id == id) {
            progress
                .parts
                .insert(key.to_string(), Part::Chunked { chunks, size });
            self.changed();
        }
    }

    /// Leaves `key`'s final part: its input has ended, and this stands for it from now on.
    pub fn submit_final(&self, key: &str, part: Vec<u8>) {
        self.leave_final(key, part.into(), None);
    }

    /// Leaves the final part of a participant that emits rows (a source, an operator), having
    /// emitted them stamped up to `emitted_up_to`. Every later cut comes after that time, so
    /// that the parts downstream hold every row it emitted.
    pub fn submit_final_after(&self, key: &str, part: Vec<u8>, emitted_up_to: u64) {
        self.leave_final(key, part.into(), Some(emitted_up_to));
    }

    /// Leaves `key`'s final part, written to the [`ChunkStore`] as it was encoded (its chunks
    /// put under [`FINAL_CUT`]); `emitted_up_to` as for [`Checkpoints::submit_final_after`].
    pub fn submit_final_chunked(
        &self,
        key: &str,
        chunks: Vec<String>,
        size: u64,
        emitted_up_to: Option<u64>,
    ) {
        self.leave_final(key, Part::Chunked { chunks, size }, emitted_up_to);
    }

    fn leave_final(&self, key: &str, part: Part, emitted_up_to: Option<u64>) {
        let mut progress = self.lock();
        let part = match part {
            Part::Bytes(part) if self.role() == Role::Follower => {
                self.to_leader(Relayed::Final {
                    key: key.to_string(),
                    part: std::sync::Arc::unwrap_or_clone(part),
                    emitted_up_to,
                });
                Vec::new().into()
            }
            part => part,
        };
        if let Some(time) = emitted_up_to {
            progress.ended_at.insert(key.to_string(), time);
        }
        progress.finals.insert(key.to_string(), part);
        self.decide_cut(&mut progress);
        self.changed();
    }

    /// `key` could not leave a consistent part (a sink that gave up delivering): no later
    /// checkpoint completes, and the run resumes from the last one stored.
    pub fn spoil(&self, key: &str, why: String) {
        let mut progress = self.lock();
        progress.spoiled.get_or_insert(format!("{key}: {why}"));
        self.to_leader(Relayed::Spoiled {
            key: key.to_string(),
            why,
        });
        self.changed();
    }

    /// Starts a checkpoint unless one is under way or the workers are still building.
    pub fn request(&self, workers: usize) -> bool {
        let mut progress = self.lock();
        if progress.built < workers || progress.requested.is_some() || progress.spoiled.is_some() {
            return false;
        }
        let id = progress.next_id;
        progress.next_id += 1;
        progress.requested = Some(id);
        progress.reports.clear();
        progress.parts.clear();
        self.to_followers(Relayed::Requested { id });
        self.decide_cut(&mut progress);
        self.changed();
        true
    }

    /// Waits up to `timeout` for a checkpoint every participant has answered: the one under way,
    /// or the run's last when every participant is final.
    pub fn wait_complete(&self, workers: usize, timeout: Duration) -> Option<Completed> {
        let progress = self.lock();
        let (mut progress, _) = self
            .changed
            .wait_timeout_while(progress, timeout, |progress| {
                Self::complete(progress, workers).is_none()
            })
            .unwrap_or_else(|p| p.into_inner());
        let all_final = Self::complete(&progress, workers)?;
        if !all_final && let Some(late) = self.ended_after_cut(&progress) {
            // An operator ended while the cut was being decided, and emitted rows at or after
            // it: its final part cannot stand for it in this checkpoint. Give this one up; the
            // next cut comes after those rows.
            tracing::debug!(
                late,
                "checkpoint abandoned: a participant ended after its cut"
            );
            progress.requested = None;
            progress.cut = None;
            progress.reports.clear();
            progress.parts.clear();
            self.cut_id.store(0, Ordering::Release);
            self.to_followers(Relayed::Resolved);
            self.changed();
            return None;
        }
        let cut = if all_final { None } else { progress.cut };
        let id = match cut {
            Some(cut) => cut.id,
            None => {
                // Final: numbered after everything requested so far.
                progress.final_taken = true;
                let id = progress.next_id;
                progress.next_id += 1;
                progress.final_id = Some(id);
                self.to_followers(Relayed::LastIs { id });
                id
            }
        };
        let mut parts = progress.finals.clone();
        if cut.is_some() {
            parts.extend(std::mem::take(&mut progress.parts));
        }
        progress.requested = None;
        progress.cut = None;
        progress.reports.clear();
        progress.parts.clear();
        self.cut_id.store(0, Ordering::Release);
        self.to_followers(Relayed::Resolved);
        self.changed();
        Some(Completed { id, cut, parts })
    }

    /// A participant that answered the cut under way with its final part alone, having emitted
    /// rows at or after the cut.
    fn ended_after_cut(&self, progress: &Progress) -> Option<String> {
        let cut = progress.cut?;
        progress
            .ended_at
            .iter()
            .find(|(key, emitted)| {
                let cut_time = self.group_of(key).map_or(cut.time, |group| {
                    self.group_times[group].load(Ordering::Acquire)
                });
                **emitted >= cut_time && !progress.parts.contains_key(*key)
            })
            .map(|(key, _)| key.clone())
    }

    /// `Some(all_final)` when a checkpoint can be stored.
    fn complete(progress: &Progress, workers: usize) -> Option<bool> {
        if progress.built < workers || progress.spoiled.is_some() {
            return None;
        }
        let all_final = progress
            .participants
            .iter()
            .all(|key| progress.finals.contains_key(key));
        if all_final {
            return (!progress.final_taken).then_some(true);
        }
        progress.cut?;
        progress
            .participants
            .iter()
            .all(|key| progress.parts.contains_key(key) || progress.finals.contains_key(key))
            .then_some(false)
    }

    /// Checkpoint `id` is stored: sinks may commit what they staged for it.
    pub fn mark_completed(&self, id: u64) {
        // Every participant took its restored part long before (they restore when built).
        self.restored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let mut progress = self.lock();
        progress.completed = id;
        progress.failure = None;
        self.completed.store(id, Ordering::Release);
        self.to_followers(Relayed::Stored { id });
        self.changed();
    }

    /// Storing a checkpoint failed; the next one is tried on schedule.
    pub fn mark_failed(&self, why: String) {
        let mut progress = self.lock();
        self.to_followers(Relayed::Failed { why: why.clone() });
        progress.failure = Some(why);
        drop(progress);
        self.changed();
    }

    /// Whether the run's last checkpoint is stored (`Some(true)`), cannot be (`Some(false)`: it
    /// failed, or a participant spoiled it), or is still to come (`None`).
    pub fn final_stored(&self) -> Option<bool> {
        let progress = self.lock();
        if progress.spoiled.is_some() {
            return Some(false);
        }
        let id = progress.final_id?;
        if progress.completed >= id {
            Some(true)
        } else if progress.failure.is_some() {
            Some(false)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks kept in memory by name, as the engine's store keeps them on disk.
    #[derive(Default)]
    struct Kept(Mutex<HashMap<String, Vec<u8>>>);

    impl ChunkStore for Kept {
        fn put(&self, _id: u64, chunk: Vec<u8>) -> Result<String, String> {
            let name = chunk_name(&chunk);
            self.0.lock().unwrap().insert(name.clone(), chunk);
            Ok(name)
        }
    }

    #[test]
    fn a_part_encoded_into_a_lent_store_is_its_chunks_which_make_the_whole_encoding() {
        let store = std::sync::Arc::new(Kept::default());
        let checkpoints = std::sync::Arc::new(Checkpoints::new(0, BTreeMap::new()));
        checkpoints.set_chunk_store(store.clone());
        let source = checkpoints.clone();
        source.register("source/a/0", true);
        let operator = Participant::register(&checkpoints, "node/1/0".into());
        checkpoints.built();
        assert!(checkpoints.request(1));
        let SourceTurn::Cut(cut) = checkpoints.source_turn("source/a/0", 5) else {
            panic!("no cut");
        };
        checkpoints.submit("source/a/0", cut.id, vec![1]);
        // Large enough to make several chunks.
        let state: Vec<(u64, String)> = (0..200_000u64).map(|k| (k, format!("s{k}"))).collect();
        operator.submit_encoded(cut, &state);
        let completed = checkpoints.wait_complete(1, Duration::ZERO).unwrap();
        let Part::Chunked { chunks, size } = &completed.parts["node/1/0"] else {
            panic!("{:?}", completed.parts.keys());
        };
        assert!(chunks.len() > 1, "{} chunks", chunks.len());
        let kept = store.0.lock().unwrap();
        let joined: Vec<u8> = chunks.iter().flat_map(|name| kept[name].clone()).collect();
        assert_eq!(joined, encode(&state));
        assert_eq!(*size, joined.len() as u64);
        assert_eq!(completed.parts["source/a/0"], vec![1].into());
    }

    #[test]
    fn the_cut_is_one_past_the_latest_time_the_sources_hold() {
        let checkpoints = Checkpoints::new(0, BTreeMap::new());
        checkpoints.register("source/a/0", true);
        checkpoints.register("source/b/0", true);
        checkpoints.register("node/1/0", false);
        checkpoints.built();
        assert_eq!(checkpoints.source_turn("source/a/0", 5), SourceTurn::Free);
        assert!(checkpoints.request(1));
        assert_eq!(checkpoints.source_turn("source/a/0", 5), SourceTurn::Hold);
        assert_eq!(checkpoints.current_cut(), None);
        let cut = Cut { id: 1, time: 10 };
        assert_eq!(
            checkpoints.source_turn("source/b/0", 9),
            SourceTurn::Cut(cut)
        );
        assert_eq!(
            checkpoints.source_turn("source/a/0", 5),
            SourceTurn::Cut(cut)
        );
        assert_eq!(checkpoints.current_cut(), Some(cut));
        checkpoints.submit("source/a/0", 1, vec![1]);
        checkpoints.submit("source/b/0", 1, vec![2]);
        assert!(checkpoints.wait_complete(1, Duration::ZERO).is_none());
        checkpoints.submit("node/1/0", 1, vec![3]);
        let completed = checkpoints.wait_complete(1, Duration::ZERO).unwrap();
        assert_eq!((completed.id, completed.cut), (1, Some(cut)));
        assert_eq!(completed.parts.len(), 3);
        assert_eq!(checkpoints.current_cut(), None);
        assert_eq!(checkpoints.source_turn("source/a/0", 12), SourceTurn::Free);
    }

    #[test]
    fn parts_of_the_dataflow_that_never_meet_are_cut_at_their_own_times() {
        let checkpoints = std::sync::Arc::new(Checkpoints::new(0, BTreeMap::new()));
        // A simulation at 60x (far ahead) and a PLC polled on the wall clock, each with a view.
        checkpoints.set_groups(HashMap::from([
            ("source/sim".to_string(), 0),
            ("node/windows".to_string(), 0),
            ("source/plc".to_string(), 1),
            ("node/tags".to_string(), 1),
        ]));
        checkpoints.register("source/sim/0", true);
        checkpoints.register("source/plc/0", true);
        let windows = Participant::register(&checkpoints, "node/windows/0".into());
        let tags = Participant::register(&checkpoints, "node/tags/0".into());
        checkpoints.built();
        assert!(checkpoints.request(1));
        assert_eq!(
            checkpoints.source_turn("source/sim/0", 9_000),
            SourceTurn::Hold
        );
        let plc = checkpoints.source_turn("source/plc/0", 100);
        assert_eq!(plc, SourceTurn::Cut(Cut { id: 1, time: 101 }));
        assert_eq!(
            checkpoints.source_turn("source/sim/0", 9_000),
            SourceTurn::Cut(Cut { id: 1, time: 9_001 })
        );
        assert_eq!(windows.pending(0), Some(Cut { id: 1, time: 9_001 }));
        assert_eq!(tags.pending(0), Some(Cut { id: 1, time: 101 }));
    }

    #[test]
    fn final_parts_stand_in_and_complete_the_last_checkpoint() {
        let checkpoints = Checkpoints::new(4, BTreeMap::new());
        checkpoints.register("source/a/0", true);
        checkpoints.register("sink/out", false);
        checkpoints.built();
        checkpoints.submit_final("source/a/0", vec![1]);
        assert!(checkpoints.request(1));
        // The finished source counts as reported: the cut is decided at once.
        assert_eq!(checkpoints.current_cut(), Some(Cut { id: 5, time: 0 }));
        checkpoints.submit_final("sink/out", vec![2]);
        let completed = checkpoints.wait_complete(1, Duration::ZERO).unwrap();
        assert_eq!(completed.cut, None);
        assert_eq!(completed.id, 6);
        assert_eq!(completed.parts.len(), 2);
    }

    #[test]
    fn a_cut_comes_after_every_row_a_source_that_ended_emitted() {
        // Two workers' shares of one file: worker 1's ended far ahead of worker 0's.
        let checkpoints = Checkpoints::new(0, BTreeMap::new());
        checkpoints.register("source/a/0", true);
        checkpoints.register("source/a/1", true);
        checkpoints.built();
        checkpoints.submit_final_after("source/a/1", vec![1], 900);
        assert!(checkpoints.request(1));
        assert_eq!(
            checkpoints.source_turn("source/a/0", 300),
            SourceTurn::Cut(Cut { id: 1, time: 901 })
        );
    }

    #[test]
    fn a_checkpoint_is_given_up_when_an_operator_ended_past_its_cut_without_answering_it() {
        let checkpoints = Checkpoints::new(0, BTreeMap::new());
        checkpoints.register("source/a/0", true);
        checkpoints.register("node/w/0", false);
        checkpoints.built();
        assert!(checkpoints.request(1));
        let cut = Cut { id: 1, time: 101 };
        assert_eq!(
            checkpoints.source_turn("source/a/0", 100),
            SourceTurn::Cut(cut)
        );
        checkpoints.submit("source/a/0", 1, vec![1]);
        // The window operator saw no cut yet, closed its windows at 160 and ended.
        checkpoints.submit_final_after("node/w/0", vec![2], 160);
        assert!(checkpoints.wait_complete(1, Duration::ZERO).is_none());
        assert_eq!(checkpoints.current_cut(), None);
        // The next cut comes after what it emitted.
        assert!(checkpoints.request(1));
        assert_eq!(
            checkpoints.source_turn("source/a/0", 120),
            SourceTurn::Cut(Cut { id: 2, time: 161 })
        );
    }

    #[test]
    fn a_spoiled_run_completes_no_more_checkpoints() {
        let checkpoints = Checkpoints::new(0, BTreeMap::new());
        checkpoints.register("sink/out", false);
        checkpoints.built();
        checkpoints.spoil("sink/out", "disk full".into());
        checkpoints.submit_final("sink/out", vec![]);
        assert!(!checkpoints.request(1));
        assert!(checkpoints.wait_complete(1, Duration::ZERO).is_none());
    }
}
