//! One materialized view's live state, shared by every subscriber.
//!
//! The dataflow publishes each completed timestamp's consolidated changes once ([`Tick`]); the
//! view applies them to its contents and appends them to a log kept for a retention window.
//! Subscribers never touch the dataflow: a new one copies a snapshot of the contents, a resuming
//! one replays the log from its timestamp, and all of them read the same ticks, so a thousand
//! subscribers cost the dataflow nothing more than one. A subscriber that has fallen behind the
//! log's start cannot be brought up to date by diffs any more and is told so.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use datafusion::arrow::datatypes::SchemaRef;
use tokio::sync::watch;
use vibelux_operators::row::{Datum, Row};

use super::fanout::{self, Fanout};
use super::seat::Seat;

/// The consolidated changes of one completed timestamp (dataflow time: watermark milliseconds).
pub struct Tick {
    pub time: u64,
    pub updates: Vec<(Row, i64)>,
    /// The updates' [`update_bytes`].
    bytes: usize,
    /// When it was published (wall clock).
    pub published: Instant,
    /// The unfiltered `diff` message as a WebSocket frame, built once and shared (not copied)
    /// by every subscriber that wants it.
    pub framed: OnceLock<Bytes>,
}

/// The contents at a timestamp, shared by every subscriber that starts there.
pub struct Snapshot {
    pub time: u64,
    pub rows: Vec<(Row, i64)>,
    pub framed: OnceLock<Bytes>,
}

/// How much history a view keeps for resuming and for slow subscribers.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Ticks older than this (in dataflow time) before the frontier are dropped…
    pub millis: u64,
    /// …once they have also been kept this long in wall-clock time: event time can leap ahead
    /// (a replay, a source's first watermark), and subscribers read at the speed of the network.
    pub grace: Duration,
    /// And the log holds at most about this many bytes, whatever its age ([`update_bytes`]):
    /// a view that changes fast (every zone's open window, many times a second) otherwise holds
    /// hundreds of megabytes of history that only a subscriber back from a long absence reads.
    pub max_bytes: usize,
}

impl Retention {
    /// The memory one view's history may take unless `--retention-memory` says otherwise.
    pub const DEFAULT_MAX_BYTES: usize = 64 << 20;
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            millis: 10 * 60 * 1000,
            grace: Duration::from_secs(30),
            max_bytes: Retention::DEFAULT_MAX_BYTES,
        }
    }
}

/// About the memory one update takes in the log: its slot, its datums and their texts, and as
/// much again for its part of the tick's framed message (a row's JSON is about as long as its
/// datums), which is built once a subscriber asks for it.
pub fn update_bytes(row: &Row) -> usize {
    let texts: usize = row
        .iter()
        .map(|datum| match datum {
            Datum::Utf8(text) => text.len(),
            Datum::List(items) => items.len() * std::mem::size_of::<Datum>(),
            _ => 0,
        })
        .sum();
    let held = std::mem::size_of::<(Row, i64)>() + row.len() * std::mem::size_of::<Datum>() + texts;
    held * 2
}

/// What a subscriber at `cursor` reads next.
pub enum Since {
    /// The ticks at or after the cursor, the new frontier, and whether the view is complete.
    Ticks {
        ticks: Vec<Arc<Tick>>,
        frontier: u64,
        closed: bool,
    },
    /// The cursor is older than the log: diffs cannot bring it up to date.
    Behind { oldest: u64 },
}

struct State {
    contents: HashMap<Row, i64>,
    /// The number of rows in `contents`, counting multiplicities.
    rows: i64,
    /// Every time before the frontier is complete.
    frontier: u64,
    closed: bool,
    log: VecDeque<Arc<Tick>>,
    /// What the log holds, by [`update_bytes`].
    log_bytes: usize,
    /// The earliest cursor the log can serve.
    oldest: u64,
    snapshot: Option<Arc<Snapshot>>,
}

pub struct LiveView {
    pub name: String,
    pub schema: SchemaRef,
    /// Columns identifying a row (`None`: rows have no key).
    pub key: Option<Vec<usize>>,
    retention: Retention,
    state: Mutex<State>,
    frontier: watch::Sender<u64>,
    updates_published: AtomicU64,
    /// Every subscriber's seat (see `live::fanout`).
    seats: Mutex<Vec<Weak<Seat>>>,
    /// Where the newest chunk ended, and whether it ended the view.
    delivered: Mutex<(u64, bool)>,
    fanout: Fanout,
    pacer: Once,
}

impl LiveView {
    pub fn new(
        name: String,
        schema: SchemaRef,
        key: Option<Vec<usize>>,
        retention: Retention,
    ) -> Self {
        LiveView {
            name,
            schema,
            key,
            retention,
            state: Mutex::new(State {
                contents: HashMap::new(),
                rows: 0,
                frontier: 0,
                closed: false,
                log: VecDeque::new(),
                log_bytes: 0,
                oldest: 0,
                snapshot: None,
            }),
            frontier: watch::channel(0).0,
            updates_published: AtomicU64::new(0),
            seats: Mutex::new(Vec::new()),
            delivered: Mutex::new((0, false)),
            // Framed chunks repeat the log's newest changes for the sweeper: a quarter of the
            // history's budget.
            fanout: Fanout::new(retention.max_bytes / 4),
            pacer: Once::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Applies completed timestamps (in time order, each consolidated) and advances the frontier;
    /// `frontier: None` means the view's input has ended.
    pub fn publish(&self, ticks: Vec<(u64, Vec<(Row, i64)>)>, frontier: Option<u64>) {
        let mut state = self.state();
        for (time, updates) in ticks {
            if updates.is_empty() {
                continue;
            }
            for (row, diff) in &updates {
                state.rows += diff;
                let count = state.contents.entry(row.clone()).or_insert(0);
                *count += diff;
                if *count == 0 {
                    state.contents.remove(row);
                }
            }
            let bytes = updates.iter().map(|(row, _)| update_bytes(row)).sum();
            state.log_bytes += bytes;
            self.updates_published
                .fetch_add(updates.len() as u64, Ordering::Relaxed);
            state.log.push_back(Arc::new(Tick {
                time,
                updates,
                bytes,
                published: Instant::now(),
                framed: OnceLock::new(),
            }));
        }
        match frontier {
            Some(frontier) => state.frontier = state.frontier.max(frontier),
            None => state.closed = true,
        }
        let frontier = state.frontier;
        while let Some(first) = state.log.front() {
            let too_old = first.time.saturating_add(self.retention.millis) < frontier
                && first.published.elapsed() >= self.retention.grace;
            let too_big = state.log_bytes > self.retention.max_bytes;
            if !(too_old || too_big) {
                break;
            }
            let first = state.log.pop_front().expect("checked");
            state.log_bytes -= first.bytes;
            state.oldest = first.time + 1;
        }
        state.snapshot = None;
        drop(state);
        self.frontier.send_replace(frontier);
    }

    /// The contents, for a checkpoint.
    pub fn contents(&self) -> Vec<(Row, i64)> {
        let state = self.state();
        state
            .contents
            .iter()
            .map(|(row, count)| (row.clone(), *count))
            .collect()
    }

    /// The contents in row order, for a checkpoint: a part written in a stable order changes
    /// only where the view did.
    pub fn contents_in_order(&self) -> Vec<(Row, i64)> {
        // Sorted after the lock is released: subscribers do not wait for it.
        let mut contents = self.contents();
        contents.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        contents
    }

    /// Takes back the contents a checkpoint kept, as the view's first change.
    pub fn restore(&self, contents: Vec<(Row, i64)>, frontier: u64) {
        self.publish(vec![(frontier, contents)], Some(frontier));
    }

    /// The current contents, and the timestamp they are complete as of.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        let mut state = self.state();
        if let Some(snapshot) = &state.snapshot {
            return snapshot.clone();
        }
        let mut rows: Vec<(Row, i64)> = state
            .contents
            .iter()
            .map(|(row, count)| (row.clone(), *count))
            .collect();
        rows.sort_unstable();
        let snapshot = Arc::new(Snapshot {
            time: state.frontier,
            rows,
            framed: OnceLock::new(),
        });
        state.snapshot = Some(snapshot.clone());
        snapshot
    }

    /// What a subscriber that has everything before `cursor` reads next.
    pub fn since(&self, cursor: u64) -> Since {
        let state = self.state();
        if cursor < state.oldest {
            return Since::Behind {
                oldest: state.oldest,
            };
        }
        let first = state.log.partition_point(|tick| tick.time < cursor);
        Since::Ticks {
            ticks: state.log.range(first..).cloned().collect(),
            frontier: state.frontier,
            closed: state.closed,
        }
    }

    /// The oldest timestamp a subscriber can resume from, and the frontier.
    pub fn resumable(&self) -> (u64, u64) {
        let state = self.state();
        (state.oldest, state.frontier)
    }

    /// Wakes whenever the frontier moves.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.frontier.subscribe()
    }

    /// The frontier, and whether the view's input has ended.
    pub fn progress(&self) -> (u64, bool) {
        let state = self.state();
        (state.frontier, state.closed)
    }

    /// Seats a subscriber, starting the view's pacer with the first (on the calling Tokio
    /// runtime): chunks then start from the frontier of that moment.
    pub fn join(self: &Arc<Self>, seat: &Arc<Seat>) {
        self.pacer.call_once(|| {
            *lock(&self.delivered) = self.progress();
            drop(tokio::spawn(fanout::pace(Arc::downgrade(self))));
        });
        lock(&self.seats).push(Arc::downgrade(seat));
    }

    /// Takes a subscriber's seat away.
    pub fn leave(&self, seat: &Arc<Seat>) {
        let seat = Arc::downgrade(seat);
        lock(&self.seats).retain(|other| !other.ptr_eq(&seat) && other.strong_count() > 0);
    }

    /// The seats of subscribers still connected.
    pub(super) fn seats(&self) -> Vec<Arc<Seat>> {
        let mut seats = lock(&self.seats);
        seats.retain(|seat| seat.strong_count() > 0);
        seats.iter().filter_map(Weak::upgrade).collect()
    }

    /// Where the newest chunk ended, and whether that was the view's end: sessions catching up
    /// on their own go that far, and the next chunk starts there.
    pub fn delivered(&self) -> (u64, bool) {
        *lock(&self.delivered)
    }

    pub fn fanout(&self) -> &Fanout {
        &self.fanout
    }

    pub(super) fn set_delivered(&self, to: u64, closed: bool) {
        *lock(&self.delivered) = (to, closed);
    }

    /// Changes published since the run started.
    pub fn updates_published(&self) -> u64 {
        self.updates_published.load(Ordering::Relaxed)
    }

    pub fn subscribers(&self) -> usize {
        lock(&self.seats)
            .iter()
            .filter(|seat| seat.strong_count() > 0)
            .count()
    }

    pub fn len(&self) -> usize {
        self.state().rows.max(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.state().contents.is_empty()
    }

    pub fn is_closed(&self) -> bool {
        self.state().closed
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Every live view of a run, by name; views created while it runs join, dropped ones leave.
#[derive(Default, Clone)]
pub struct LiveViews {
    views: Arc<std::sync::RwLock<Vec<Arc<LiveView>>>>,
}

impl LiveViews {
    pub fn new(views: Vec<Arc<LiveView>>) -> Self {
        LiveViews {
            views: Arc::new(std::sync::RwLock::new(views)),
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<LiveView>> {
        self.all()
            .into_iter()
            .find(|view| view.name.eq_ignore_ascii_case(name))
    }

    /// The views now, in the order they were created.
    pub fn all(&self) -> Vec<Arc<LiveView>> {
        self.views
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn add(&self, view: Arc<LiveView>) {
        self.views
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(view);
    }

    pub fn remove(&self, name: &str) {
        self.views
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|view| !view.name.eq_ignore_ascii_case(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn view(retention: Retention) -> LiveView {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        LiveView::new("v".into(), schema, None, retention)
    }

    fn row(n: i64) -> Row {
        vec![Datum::Int64(n)]
    }

    #[test]
    fn snapshots_and_ticks_add_up_to_the_contents() {
        let view = view(Retention::default());
        view.publish(vec![(5, vec![(row(1), 1), (row(2), 1)])], Some(6));
        let snapshot = view.snapshot();
        assert_eq!((snapshot.time, snapshot.rows.len()), (6, 2));
        view.publish(
            vec![(7, vec![(row(1), -1)]), (8, vec![(row(3), 1)])],
            Some(9),
        );
        let Since::Ticks {
            ticks, frontier, ..
        } = view.since(6)
        else {
            panic!("behind")
        };
        assert_eq!(frontier, 9);
        assert_eq!(ticks.iter().map(|t| t.time).collect::<Vec<_>>(), vec![7, 8]);
        let rows: Vec<Row> = view
            .snapshot()
            .rows
            .iter()
            .map(|(r, _)| r.clone())
            .collect();
        assert_eq!(rows, vec![row(2), row(3)]);
    }

    #[test]
    fn a_cursor_older_than_the_retained_log_is_behind() {
        let view = view(Retention {
            millis: 10,
            grace: Duration::ZERO,
            max_bytes: 1 << 20,
        });
        view.publish(vec![(5, vec![(row(1), 1)])], Some(6));
        view.publish(vec![(30, vec![(row(2), 1)])], Some(31));
        assert!(matches!(view.since(5), Since::Behind { oldest: 6 }));
        assert!(matches!(view.since(6), Since::Ticks { .. }));
    }

    #[test]
    fn the_history_keeps_to_its_memory_and_the_contents_stay_whole() {
        let tick_bytes = 100 * update_bytes(&row(0));
        let view = view(Retention {
            millis: u64::MAX / 2,
            grace: Duration::from_secs(3600),
            max_bytes: 3 * tick_bytes,
        });
        for time in 1..=10 {
            let updates = (0..100).map(|n| (row(time as i64 * 1000 + n), 1)).collect();
            view.publish(vec![(time, updates)], Some(time + 1));
        }
        // Three ticks' worth is kept however young they are; older cursors start afresh.
        let Since::Ticks { ticks, .. } = view.since(8) else {
            panic!("the newest three ticks are kept")
        };
        assert_eq!(
            ticks.iter().map(|t| t.time).collect::<Vec<_>>(),
            vec![8, 9, 10]
        );
        assert!(matches!(view.since(7), Since::Behind { oldest: 8 }));
        assert_eq!(view.snapshot().rows.len(), 1000);
    }
}
