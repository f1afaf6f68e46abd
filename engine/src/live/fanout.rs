//! Fan-out: how one view's changes reach thousands of subscribers.
//!
//! Sending is what costs with many subscribers — a socket write each — so the number of
//! writes, not the number of changes, must stay bounded, and no subscriber may wait for the
//! others. A pacer per view frames the changes of each completed stretch of time once, as a
//! [`Chunk`] (a server's WebSocket frames are the same bytes for every client). A sweeper thread
//! then goes round the view's seats (`live::seat`) again and again while any is behind: each
//! parked, unfiltered seat gets everything from its cursor to the newest chunk, with `progress`
//! at its end, in one non-blocking write, without its session being woken. A sweep takes as
//! long as the machine needs to write every socket once, and carries whatever completed during
//! the previous one; a change therefore waits about one sweep (and its rest, see [`sweep`]), not
//! for a sweep in progress to finish first. Seats that cannot be served so (new, resuming, filtered, slow, or at the
//! view's end) are woken once per chunk to catch up from the view's log.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use super::frames;
use super::protocol::{Envelope, progress_message, updates_message};
use super::seat::Seat;
use super::view::{LiveView, Since, Tick};

/// The unfiltered `updates` messages of `[from, to)`, framed.
pub struct Chunk {
    from: u64,
    to: u64,
    bytes: Bytes,
}

/// How many chunks are kept for seats that are behind; older seats catch up from the log.
const CHUNKS_KEPT: usize = 512;

#[derive(Default)]
struct Chunks {
    list: VecDeque<Arc<Chunk>>,
    /// The bytes of the chunks in `list`.
    bytes: usize,
    /// The view has ended with the last chunk.
    closed: bool,
    /// A sweeper is running.
    sweeping: bool,
}

/// A view's recent chunks, and whether it is being swept.
pub struct Fanout {
    chunks: Mutex<Chunks>,
    /// The chunks kept hold at most this many bytes (the newest is kept whatever its size).
    max_bytes: usize,
    /// Bumped with every chunk: sweepers reload when it moves.
    generation: AtomicU64,
    /// How long each pass that wrote or woke subscribers took: a change waits about this long
    /// (`vibelux_view_sweep_seconds`).
    pub sweep_seconds: Histogram,
}

impl Fanout {
    pub fn new(max_bytes: usize) -> Self {
        Fanout {
            chunks: Mutex::default(),
            max_bytes,
            generation: AtomicU64::default(),
            // 50 µs to 0.8 s.
            sweep_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 15)),
        }
    }

    fn chunks(&self) -> MutexGuard<'_, Chunks> {
        self.chunks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Adds a chunk; returns whether a sweeper must be started.
    fn push(&self, chunk: Chunk, closed: bool) -> bool {
        let mut chunks = self.chunks();
        chunks.bytes += chunk.bytes.len();
        chunks.list.push_back(Arc::new(chunk));
        while chunks.list.len() > CHUNKS_KEPT
            || (chunks.bytes > self.max_bytes && chunks.list.len() > 1)
        {
            let oldest = chunks.list.pop_front().expect("more than one");
            chunks.bytes -= oldest.bytes.len();
        }
        chunks.closed = closed;
        self.generation.fetch_add(1, Ordering::AcqRel);
        !std::mem::replace(&mut chunks.sweeping, true)
    }

    /// Forgets every chunk: the next starts somewhere else, and seats at the old ones catch up
    /// from the log.
    fn clear(&self) {
        let mut chunks = self.chunks();
        chunks.list.clear();
        chunks.bytes = 0;
        drop(chunks);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Ends a sweep unless a chunk came after `seen`; returns whether it ended.
    fn stop_sweeping(&self, seen: u64) -> bool {
        let mut chunks = self.chunks();
        if self.generation() != seen {
            return false;
        }
        chunks.sweeping = false;
        true
    }
}

/// A tick's unfiltered `diff` message, framed once for every subscriber that wants it.
pub fn framed_tick<'a>(view: &LiveView, tick: &'a Tick) -> &'a Bytes {
    tick.framed.get_or_init(|| {
        frames::text(&updates_message(
            view,
            tick.time,
            &tick.updates,
            Envelope::Diff,
        ))
    })
}

/// The sweeper's copy of the chunks, and the writes it has assembled from them.
struct Sweeper {
    generation: u64,
    chunks: Vec<Arc<Chunk>>,
    closed: bool,
    /// Bytes from a cursor to the newest chunk's end, for the cursors seen this generation
    /// (nearly every seat of a sweep is at the same one).
    assembled: Vec<(u64, Bytes)>,
}

impl Sweeper {
    fn new() -> Self {
        Sweeper {
            generation: u64::MAX,
            chunks: Vec::new(),
            closed: false,
            assembled: Vec::new(),
        }
    }

    /// Takes the newest chunks if they changed; returns the generation this pass serves.
    fn reload(&mut self, fanout: &Fanout) -> u64 {
        let generation = fanout.generation();
        if generation != self.generation {
            let chunks = fanout.chunks();
            self.generation = fanout.generation();
            self.chunks = chunks.list.iter().cloned().collect();
            self.closed = chunks.closed;
            self.assembled.clear();
        }
        self.generation
    }

    fn newest(&self) -> u64 {
        self.chunks.last().map_or(0, |chunk| chunk.to)
    }

    /// Everything from `cursor` to the newest chunk's end, then progress there; `None` when
    /// `cursor` is not where a kept chunk starts.
    fn bytes_from(&mut self, cursor: u64) -> Option<Bytes> {
        if let Some((_, bytes)) = self.assembled.iter().find(|(from, _)| *from == cursor) {
            return Some(bytes.clone());
        }
        let first = self
            .chunks
            .binary_search_by_key(&cursor, |chunk| chunk.from)
            .ok()?;
        let mut out = Vec::new();
        for chunk in &self.chunks[first..] {
            out.extend_from_slice(&chunk.bytes);
        }
        frames::push_text(&progress_message(self.newest()), &mut out);
        let bytes = Bytes::from(out);
        if self.assembled.len() >= 4 {
            self.assembled.remove(0);
        }
        self.assembled.push((cursor, bytes.clone()));
        Some(bytes)
    }

    /// One pass over the seats; returns whether it wrote or woke any.
    fn pass(&mut self, seats: &[Arc<Seat>]) -> bool {
        let (newest, closed) = (self.newest(), self.closed);
        let mut busy = false;
        for seat in seats {
            busy |= seat.offer(newest, closed, &mut |cursor| self.bytes_from(cursor));
        }
        busy
    }
}

/// The longest pass that needs no rest after it.
const RESTLESS_PASS: Duration = Duration::from_millis(5);

/// Sweeps the view's seats until none is behind the newest chunk.
///
/// A long pass (thousands of sockets) is followed by a rest half as long: the writes then fill
/// at most two thirds of a core, leaving time to whatever else shares the machine, and the next
/// pass carries more changes in the same number of writes. On `bench/live.sh` with 10,000
/// subscribers and a (then tokio-tungstenite) client on the same two cores, this lowered p99
/// latency from 362 ms (no rest) or 236 ms (a rest as long as the pass) to 182 ms; sweeping on
/// two threads at once was worse still (792 ms), so one thread sweeps.
fn sweep(view: &LiveView) {
    let mut sweeper = Sweeper::new();
    loop {
        let generation = sweeper.reload(view.fanout());
        let seats = view.seats();
        let started = Instant::now();
        if sweeper.pass(&seats) {
            let took = started.elapsed();
            view.fanout().sweep_seconds.observe(took.as_secs_f64());
            if took > RESTLESS_PASS {
                std::thread::sleep(took / 2);
            }
        } else if view.fanout().stop_sweeping(generation) {
            return;
        }
    }
}

/// Runs one view's pacer until the view completes or is dropped: frames what completed into
/// chunks and starts a sweeper when none is running.
pub async fn pace(view: Weak<LiveView>) {
    let Some(mut frontier_moved) = view.upgrade().map(|view| view.watch()) else {
        return;
    };
    let mut from = match view.upgrade() {
        Some(view) => view.delivered().0,
        None => return,
    };
    loop {
        let Some(live) = view.upgrade() else { return };
        let (frontier, closed) = live.progress();
        if frontier > from || closed {
            match live.since(from) {
                Since::Ticks {
                    ticks,
                    frontier,
                    closed,
                } => {
                    let mut bytes = Vec::new();
                    for tick in &ticks {
                        bytes.extend_from_slice(framed_tick(&live, tick));
                    }
                    let chunk = Chunk {
                        from,
                        to: frontier,
                        bytes: bytes.into(),
                    };
                    // Sessions catching up on their own go as far as this chunk.
                    live.set_delivered(frontier, closed);
                    if live.fanout().push(chunk, closed) {
                        let swept = live.clone();
                        drop(tokio::task::spawn_blocking(move || sweep(&swept)));
                    }
                    if closed {
                        return;
                    }
                    from = frontier;
                    continue;
                }
                // The log moved past `from` (a burst was trimmed while the pacer waited):
                // seats there have fallen behind and will be told so.
                Since::Behind { oldest } => {
                    live.fanout().clear();
                    from = oldest;
                    continue;
                }
            }
        }
        drop(live);
        if frontier_moved.changed().await.is_err() {
            return;
        }
    }
}
