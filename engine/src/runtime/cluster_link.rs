//! The wire between a cluster's processes: checkpoint messages, a stop that reaches every
//! process, and a greeting that makes sure every process runs the same pipeline from the same
//! checkpoint.
//!
//! Each process agrees on checkpoints through its own `Checkpoints`; process 0's decides for
//! all (`vibelux_interfaces::checkpoint::Relayed` says what the others tell it and what it
//! tells them). The messages travel on a dataflow of their own, built before the run's on
//! every worker, so they use the connections timely already keeps between processes and
//! arrive in the order they were sent. Each process's first worker carries them: it sends what
//! its `Checkpoints` recorded after every step, and applies what arrives.
//!
//! An alarm command (acknowledge, shelve) given on process 0 is passed to the others, where the
//! instance may live. Each process tells process 0 how far its sources have read in event time,
//! since a tailed table (read on process 0) is timed by the furthest any source has reached:
//! with only process 0's own sources to go by, a table beside data that another process reads
//! ahead of the wall clock would hold every window back until the clock caught up. A stop (Ctrl-C, SIGTERM, `--for`) on any process is passed to the others, so one command
//! stops the whole cluster cleanly (each process's sources leave final parts, and the cluster's
//! last checkpoint is stored).
//!
//! The greeting comes first. Processes that run different pipelines, or resumed from different
//! checkpoints (one restarted while another stored a new one, or their `--state` locations are
//! not the same storage), would build dataflows that do not fit together or state that does not
//! add up; such a process stops at once and says why, and a restart of the cluster resumes it
//! consistently.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::InputHandle;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::worker::Worker;
use vibelux_connectors::source::EventClock;
use vibelux_interfaces::checkpoint::{Checkpoints, Relayed, Role};
use vibelux_operators::alarm::{AlarmCommand, AlarmDesk};

use super::statements::StatementRelay;

/// What every process of a cluster must agree on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Greeting {
    /// The pipeline's fingerprint (`state::pipeline_fingerprint`).
    pub pipeline: String,
    /// `None` without checkpoints; otherwise the checkpoint whose state this process restored
    /// (0 for a fresh start).
    pub resumed: Option<u64>,
    /// Whether views and sinks may be added while running (the API is served): every input is
    /// then tapped, which changes the dataflow every process builds.
    pub extensible: bool,
}

/// Where this process sits in the cluster, and what it greets the others with.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    pub process: usize,
    pub processes: usize,
    /// Workers per process.
    pub threads: usize,
    pub greeting: Greeting,
    /// This process's stop flag: set here, it is sent on; sent from elsewhere, it is set.
    pub stop: Arc<AtomicBool>,
    /// This process's alarm commands: given here, they are sent on; sent from elsewhere, they
    /// are delivered to this process's workers.
    pub alarms: Arc<AlarmDesk>,
    /// How far this process's sources have read in event time: sent to process 0 from the
    /// others, advanced there by what they send.
    pub event_clock: Arc<EventClock>,
    /// Statements given over the API: applied on process 0 and sent on, applied where they
    /// arrive.
    pub statements: Arc<StatementRelay>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Message {
    Greeting(Greeting),
    Relayed(Relayed),
    /// The sending process was stopped.
    Stop,
    /// A command for an alarm's instances.
    Alarm {
        alarm: String,
        command: AlarmCommand,
    },
    /// The furthest event time the sending process's sources have reached.
    EventClock(u64),
    /// A request's SQL that process 0 applied.
    Statements(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Envelope {
    /// The cluster's index of the worker it is for: a process's first worker.
    to: usize,
    from: usize,
    message: Message,
}

type Input = InputHandle<u64, CapacityContainerBuilder<Vec<Envelope>>>;

/// How much further (event-time milliseconds) a process's sources must have read before it
/// tells process 0 again.
const EVENT_CLOCK_GRAIN_MILLIS: u64 = 1000;

/// One worker's end of the link. Only a process's first worker sends; the others close their
/// input at once.
pub struct ClusterLink {
    input: Option<Input>,
    settings: LinkSettings,
    checkpoints: Option<Arc<Checkpoints>>,
    /// Every other process.
    others: Vec<usize>,
    greeted: bool,
    stop_sent: bool,
    /// The event time last sent to process 0.
    clock_sent: u64,
}

impl ClusterLink {
    /// Builds the link's dataflow on `worker`; every worker of every process must, before the
    /// run's dataflow, so that the dataflows line up across processes.
    pub fn build(
        worker: &mut Worker,
        settings: &LinkSettings,
        checkpoints: Option<Arc<Checkpoints>>,
    ) -> Self {
        let mut input = Input::new();
        let receiving = Receiving {
            settings: settings.clone(),
            checkpoints: checkpoints.clone(),
        };
        worker.dataflow::<u64, _, _>(|scope| {
            input.to_stream(scope).sink(
                Exchange::new(|envelope: &Envelope| envelope.to as u64),
                "ClusterLink",
                move |(input, _)| {
                    input.for_each(|_, envelopes| {
                        for envelope in envelopes.drain(..) {
                            receiving.take(envelope);
                        }
                    });
                },
            );
        });
        let first = worker.index().is_multiple_of(settings.threads.max(1));
        ClusterLink {
            input: first.then_some(input),
            settings: settings.clone(),
            checkpoints,
            others: (0..settings.processes)
                .filter(|&process| process != settings.process)
                .collect(),
            greeted: false,
            stop_sent: false,
            clock_sent: 0,
        }
    }

    /// Sends what this process has to say, after a step of the worker. The link closes once
    /// the run's dataflow has ended here (`run_ended`) and its last checkpoint is settled
    /// (stored or failed).
    pub fn pump(&mut self, run_ended: bool) {
        let Some(input) = &mut self.input else { return };
        let settings = &self.settings;
        let mut sent = false;
        let mut send = |to: &[usize], message: Message| {
            for &process in to {
                sent = true;
                input.send(Envelope {
                    to: process * settings.threads.max(1),
                    from: settings.process,
                    message: message.clone(),
                });
            }
        };
        if !self.greeted {
            self.greeted = true;
            send(&self.others, Message::Greeting(settings.greeting.clone()));
        }
        for (alarm, command) in settings.alarms.take_forwarded() {
            send(&self.others, Message::Alarm { alarm, command });
        }
        for sql in settings.statements.take_forwarded() {
            send(&self.others, Message::Statements(sql));
        }
        // A second of event time at most between messages: the tables need no finer grain.
        let clock = settings.event_clock.latest();
        if settings.process != 0
            && clock >= self.clock_sent.saturating_add(EVENT_CLOCK_GRAIN_MILLIS)
        {
            self.clock_sent = clock;
            send(&[0], Message::EventClock(clock));
        }
        if !self.stop_sent && settings.stop.load(Ordering::Relaxed) {
            self.stop_sent = true;
            send(&self.others, Message::Stop);
        }
        // Settled is read before the messages are taken, so that everything recorded before
        // it (the last checkpoint's news) leaves before the link closes.
        let settled = run_ended
            && self
                .checkpoints
                .as_ref()
                .is_none_or(|checkpoints| checkpoints.final_stored().is_some());
        if let Some(checkpoints) = &self.checkpoints {
            let addressees: &[usize] = match checkpoints.role() {
                Role::Leader => &self.others,
                Role::Follower => &[0],
                Role::Alone => &[],
            };
            for relayed in checkpoints.take_relayed() {
                send(addressees, Message::Relayed(relayed));
            }
        }
        // Timely sends a batch on to other processes when its time closes: each batch of
        // messages is a round of its own.
        if sent {
            let next = *input.time() + 1;
            input.advance_to(next);
        }
        if settled {
            self.input = None;
        }
    }
}

/// What a process's first worker does with what arrives.
struct Receiving {
    settings: LinkSettings,
    checkpoints: Option<Arc<Checkpoints>>,
}

impl Receiving {
    fn take(&self, envelope: Envelope) {
        let (process, from) = (self.settings.process, envelope.from);
        match envelope.message {
            Message::Greeting(theirs) => {
                if let Some(problem) = disagreement(&self.settings.greeting, &theirs) {
                    panic!(
                        "process {process} of the cluster cannot run with process {from}: {problem}"
                    );
                }
            }
            Message::Relayed(relayed) => {
                let Some(checkpoints) = &self.checkpoints else {
                    panic!(
                        "process {from} of the cluster keeps checkpoints and process {process} does not"
                    );
                };
                if let Err(problem) = checkpoints.apply_relayed(relayed) {
                    panic!("process {process} of the cluster, from process {from}: {problem}");
                }
            }
            Message::Alarm { alarm, command } => {
                self.settings.alarms.deliver(&alarm, command);
            }
            Message::EventClock(time) => self.settings.event_clock.advance(time),
            Message::Statements(sql) => self.settings.statements.deliver(sql),
            Message::Stop => {
                if !self.settings.stop.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "stopping: process {from} of the cluster was stopped, so is this one"
                    );
                }
            }
        }
    }
}

/// Why two processes cannot run together, if they cannot.
fn disagreement(ours: &Greeting, theirs: &Greeting) -> Option<String> {
    if ours.pipeline != theirs.pipeline {
        return Some(format!(
            "they run different pipelines (fingerprints {} here, {} there): every process must \
             be given the same SQL",
            ours.pipeline, theirs.pipeline
        ));
    }
    if ours.extensible != theirs.extensible {
        return Some(
            "one serves HTTP or Postgres (and so takes statements over the API) and the other \
             does not: give every process the same --http and --pg settings"
                .into(),
        );
    }
    match (ours.resumed, theirs.resumed) {
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => Some(
            "one keeps checkpoints and the other does not: give every process the same --state \
             (or --no-state to all)"
                .into(),
        ),
        (Some(here), Some(there)) if here != there => Some(format!(
            "they resumed from different checkpoints ({} here, {} there): every process must \
             read the same --state location (object storage, or a directory they share), and a \
             restart after a checkpoint was stored mid-restart resumes them alike",
            name(here),
            name(there)
        )),
        _ => None,
    }
}

fn name(checkpoint: u64) -> String {
    match checkpoint {
        0 => "none: a fresh start".into(),
        id => format!("checkpoint {id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greeting(pipeline: &str, resumed: Option<u64>) -> Greeting {
        Greeting {
            pipeline: pipeline.into(),
            resumed,
            extensible: false,
        }
    }

    #[test]
    fn processes_must_run_one_pipeline_from_one_checkpoint() {
        assert_eq!(
            disagreement(&greeting("a", Some(4)), &greeting("a", Some(4))),
            None
        );
        assert_eq!(
            disagreement(&greeting("a", None), &greeting("a", None)),
            None
        );
        let other_sql = disagreement(&greeting("a", None), &greeting("b", None)).unwrap();
        assert!(other_sql.contains("different pipelines"), "{other_sql}");
        let other_state = disagreement(&greeting("a", Some(4)), &greeting("a", Some(0))).unwrap();
        assert!(
            other_state.contains("checkpoint 4 here, none: a fresh start there"),
            "{other_state}"
        );
        let one_stateless = disagreement(&greeting("a", Some(4)), &greeting("a", None)).unwrap();
        assert!(one_stateless.contains("--state"), "{one_stateless}");
        let serving = Greeting {
            extensible: true,
            ..greeting("a", None)
        };
        let one_serves = disagreement(&serving, &greeting("a", None)).unwrap();
        assert!(one_serves.contains("--http"), "{one_serves}");
    }
}
