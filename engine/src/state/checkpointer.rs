//! The thread that takes checkpoints on schedule and stores them.
//!
//! It asks for a checkpoint every interval (the workers agree on its cut and leave their
//! parts; see `vibelux_interfaces::checkpoint`), waits until every part is in, stores the whole
//! and only then tells the sinks that it is stored, so they can make visible what they staged.
//! The run's last checkpoint, when every participant is final, is stored the same way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use vibelux_interfaces::checkpoint::{Checkpoints, Completed};

use super::store::{StateDirectory, StoredCheckpoint};

/// How often the thread looks for completed checkpoints between requests.
const POLL: Duration = Duration::from_millis(50);

/// What `/metrics` and `/healthz` show of checkpoints.
#[derive(Debug, Default)]
pub struct CheckpointMetrics {
    pub stored: AtomicU64,
    pub failures: AtomicU64,
    /// Unix time (ms) the last checkpoint was stored; 0 before the first.
    pub last_stored_unix_millis: AtomicU64,
    /// From the request to stored, of the last one (µs).
    pub last_duration_micros: AtomicU64,
    pub last_size_bytes: AtomicU64,
    /// What the last checkpoint wrote: the chunks the one before did not have.
    pub last_written_bytes: AtomicU64,
    /// Why the last attempt failed, while the latest attempt failed.
    pub failure: std::sync::Mutex<Option<String>>,
}

impl CheckpointMetrics {
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The running checkpointer.
pub struct Checkpointer {
    handle: Option<JoinHandle<()>>,
    done: Arc<AtomicBool>,
}

/// What the checkpointer stores checkpoints as.
pub struct Storing {
    pub store: StateDirectory,
    pub pipeline: String,
    /// What each key holds (stored with every checkpoint).
    pub described: BTreeMap<String, String>,
    pub workers: usize,
    pub interval: Duration,
}

impl Checkpointer {
    pub fn spawn(
        checkpoints: Arc<Checkpoints>,
        storing: Storing,
        metrics: Arc<CheckpointMetrics>,
    ) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let finished = done.clone();
        let handle = std::thread::Builder::new()
            .name("checkpointer".into())
            .spawn(move || run(&checkpoints, &storing, &metrics, &finished))
            .expect("starting the checkpointer thread");
        Checkpointer {
            handle: Some(handle),
            done,
        }
    }

    /// Stores what is complete (the run's last checkpoint, once every worker ended) and stops.
    pub fn finish(mut self) {
        self.done.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
    }
}

fn run(
    checkpoints: &Checkpoints,
    storing: &Storing,
    metrics: &CheckpointMetrics,
    done: &AtomicBool,
) {
    let mut requested_at = Instant::now();
    loop {
        let finishing = done.load(Ordering::Acquire);
        if !finishing
            && requested_at.elapsed() >= storing.interval
            && checkpoints.request(storing.workers)
        {
            requested_at = Instant::now();
        }
        let wait = if finishing { Duration::ZERO } else { POLL };
        if let Some(completed) = checkpoints.wait_complete(storing.workers, wait) {
            store(checkpoints, storing, metrics, completed, requested_at);
        } else if finishing {
            return;
        }
    }
}

fn store(
    checkpoints: &Checkpoints,
    storing: &Storing,
    metrics: &CheckpointMetrics,
    completed: Completed,
    requested_at: Instant,
) {
    let id = completed.id;
    let checkpoint = StoredCheckpoint {
        format: super::store::FORMAT,
        id,
        pipeline: storing.pipeline.clone(),
        workers: storing.workers,
        taken_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        cut: completed.cut.map(|cut| cut.time),
        described: storing.described.clone(),
        parts: completed.parts,
    };
    match storing.store.store(&checkpoint) {
        Ok(stored) => {
            checkpoints.mark_completed(id);
            metrics.stored.fetch_add(1, Ordering::Relaxed);
            metrics
                .last_size_bytes
                .store(stored.size, Ordering::Relaxed);
            metrics
                .last_written_bytes
                .store(stored.written, Ordering::Relaxed);
            let duration = if completed.cut.is_some() {
                requested_at.elapsed()
            } else {
                Duration::ZERO
            };
            metrics
                .last_duration_micros
                .store(duration.as_micros() as u64, Ordering::Relaxed);
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            metrics
                .last_stored_unix_millis
                .store(now.as_millis() as u64, Ordering::Relaxed);
            let mut failure = metrics.failure.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(was) = failure.take() {
                tracing::info!("checkpoints are stored again (was: {was})");
            }
            tracing::debug!(
                id,
                size = stored.size,
                written = stored.written,
                ?duration,
                "checkpoint stored"
            );
        }
        Err(error) => {
            let why = format!("{error:#}");
            metrics.failures.fetch_add(1, Ordering::Relaxed);
            let mut failure = metrics.failure.lock().unwrap_or_else(|p| p.into_inner());
            if failure.as_deref() != Some(why.as_str()) {
                tracing::error!("cannot store checkpoint {id}: {why}");
            }
            *failure = Some(why.clone());
            checkpoints.mark_failed(why);
        }
    }
}
