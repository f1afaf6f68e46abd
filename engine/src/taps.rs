//! Taps: a running dataflow's inputs, offered to dataflows built while it runs.
//!
//! Views and sinks created through `POST /v1/sql` become new timely dataflows; timely cannot
//! connect an edge from one dataflow into another, so the pipeline's main dataflow ends every
//! source stream (and table) in a tap operator that copies what passes, with its frontier, into
//! the queues of the dataflows that have asked for it. A replay operator in the new dataflow
//! emits the queue at the same timestamps and holds its capability at the tap's frontier, so
//! time in the new dataflow means what it means in the main one. A new dataflow sees a stream's
//! rows from the moment it is built on; a table's consumers first receive its current contents.
//! Everything here is per worker (`Rc`): each worker taps its own partition.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, Stream};
use timely::scheduling::Activator;
use vibelux_operators::row::{Row, Update};

/// What a tap has seen that one consumer has not read yet.
pub struct Queue<D> {
    batches: VecDeque<(u64, Vec<D>)>,
    /// The tap's frontier; `None` once its stream has ended.
    frontier: Option<u64>,
    activator: Option<Activator>,
}

impl<D> Queue<D> {
    fn new(frontier: Option<u64>) -> Self {
        Queue {
            batches: VecDeque::new(),
            frontier,
            activator: None,
        }
    }

    fn wake(&self) {
        if let Some(activator) = &self.activator {
            activator.activate();
        }
    }
}

/// One tapped stream: its consumers and its latest frontier.
struct Tap<D> {
    consumers: Vec<Weak<RefCell<Queue<D>>>>,
    frontier: Option<u64>,
    /// For tables: the consolidated contents so far, replayed to each new consumer.
    contents: Option<HashMap<Row, i64>>,
}

impl<D> Default for Tap<D> {
    fn default() -> Self {
        Tap {
            consumers: Vec::new(),
            frontier: Some(0),
            contents: None,
        }
    }
}

/// Which stream of the main dataflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tapped {
    SourceRows(usize),
    SourceDeadLetters(usize),
    SourceLateRows(usize),
    SourceHealth(usize),
    TableChanges(usize),
    TableDeadLetters(usize),
}

/// Every tapped stream on this worker.
#[derive(Default, Clone)]
pub struct Taps {
    rows: Rc<RefCell<HashMap<Tapped, Tap<Row>>>>,
    updates: Rc<RefCell<HashMap<Tapped, Tap<Update>>>>,
}

/// Ends `stream` in an operator copying each batch, and the frontier, to every consumer;
/// `observe` sees each batch first (a table tap keeps the contents with it).
fn tap<D: Clone + 'static>(
    stream: Stream<'_, u64, Vec<D>>,
    taps: Rc<RefCell<HashMap<Tapped, Tap<D>>>>,
    which: Tapped,
    mut observe: impl FnMut(&mut Tap<D>, &[D]) + 'static,
) {
    stream.sink(Pipeline, "Tap", move |(input, frontier)| {
        let mut taps = taps.borrow_mut();
        let tap = taps.get_mut(&which).expect("registered");
        tap.consumers.retain(|queue| queue.strong_count() > 0);
        input.for_each(|time, data| {
            let Some(&time) = time.least() else { return };
            observe(tap, data);
            for queue in tap.consumers.iter().filter_map(Weak::upgrade) {
                queue.borrow_mut().batches.push_back((time, data.clone()));
            }
        });
        tap.frontier = frontier.frontier().first().copied();
        for queue in tap.consumers.iter().filter_map(Weak::upgrade) {
            let mut queue = queue.borrow_mut();
            queue.frontier = tap.frontier;
            queue.wake();
        }
    });
}

/// A new consumer of a tap, starting with `first` (if any) at the tap's frontier.
fn consume<D>(
    taps: &RefCell<HashMap<Tapped, Tap<D>>>,
    which: Tapped,
    first: impl FnOnce(&Tap<D>) -> Vec<D>,
) -> Rc<RefCell<Queue<D>>> {
    let mut taps = taps.borrow_mut();
    let tap = taps.entry(which).or_default();
    let queue = Rc::new(RefCell::new(Queue::new(tap.frontier)));
    let initial = first(tap);
    if let (false, Some(now)) = (initial.is_empty(), tap.frontier) {
        queue.borrow_mut().batches.push_back((now, initial));
    }
    tap.consumers.push(Rc::downgrade(&queue));
    queue
}

impl Taps {
    /// Ends `stream` in a tap.
    pub fn tap_rows(&self, stream: Stream<'_, u64, Vec<Row>>, which: Tapped) {
        self.rows.borrow_mut().insert(which, Tap::default());
        tap(stream, self.rows.clone(), which, |_, _| {});
    }

    /// Ends a table's changes in a tap that also keeps the table's contents.
    pub fn tap_updates(&self, stream: Stream<'_, u64, Vec<Update>>, which: Tapped) {
        self.updates.borrow_mut().insert(
            which,
            Tap {
                contents: Some(HashMap::new()),
                ..Tap::default()
            },
        );
        tap(stream, self.updates.clone(), which, |tap, data| {
            let contents = tap.contents.get_or_insert_with(HashMap::new);
            for (row, _, diff) in data {
                let count = contents.entry(row.clone()).or_insert(0);
                *count += diff;
                if *count == 0 {
                    contents.remove(row);
                }
            }
        });
    }

    /// A stream in `scope` replaying what the tap sees from now on.
    pub fn replay_rows<'scope>(
        &self,
        scope: Scope<'scope, u64>,
        which: Tapped,
    ) -> Stream<'scope, u64, Vec<Row>> {
        replay(scope, consume(&self.rows, which, |_| Vec::new()))
    }

    /// Like [`Taps::replay_rows`]; a table's consumer first receives the current contents.
    pub fn replay_updates<'scope>(
        &self,
        scope: Scope<'scope, u64>,
        which: Tapped,
    ) -> Stream<'scope, u64, Vec<Update>> {
        let queue = consume(&self.updates, which, |tap| {
            let (Some(contents), Some(now)) = (&tap.contents, tap.frontier) else {
                return Vec::new();
            };
            contents
                .iter()
                .map(|(row, count)| (row.clone(), now, *count))
                .collect()
        });
        replay(scope, queue)
    }
}

/// Emits a queue's batches at their timestamps; holds a capability at the tap's frontier.
fn replay<'scope, D: Clone + 'static>(
    scope: Scope<'scope, u64>,
    queue: Rc<RefCell<Queue<D>>>,
) -> Stream<'scope, u64, Vec<D>> {
    source(scope, "Replay", move |capability, info| {
        queue.borrow_mut().activator = Some(scope.activator_for(info.address));
        let mut capability = Some(capability);
        move |output| {
            let Some(held) = capability.as_mut() else {
                return;
            };
            let mut queue = queue.borrow_mut();
            while let Some((time, mut data)) = queue.batches.pop_front() {
                // Batches arrive at or after the frontier last seen, where the capability is.
                let time = time.max(*held.time());
                output
                    .session(&held.delayed(&time))
                    .give_container(&mut data);
            }
            match queue.frontier {
                Some(frontier) if frontier > *held.time() => held.downgrade(&frontier),
                Some(_) => {}
                None => capability = None,
            }
        }
    })
}
