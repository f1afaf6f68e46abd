//! What people do to alarms: acknowledge one, shelve it for a while, unshelve it.
//!
//! Commands come from outside the dataflow (the HTTP API) while it runs. Each worker's
//! `RaiseAlarms` operator registers an inbox here under the alarm's name; a command goes to every
//! worker of that alarm and wakes it, and the worker that holds the key's instance applies it in
//! the alarm's event time. In a cluster, an instance may live on another process's worker: the
//! desk also keeps each command for the engine to send to the other processes, whose desks
//! deliver it to their workers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, channel};

use serde::{Deserialize, Serialize};
use timely::scheduling::SyncActivator;

use crate::row::Row;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AlarmAction {
    Acknowledge,
    /// Suppress the instance's transitions for this long (event time).
    Shelve {
        for_nanos: i64,
    },
    Unshelve,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AlarmCommand {
    pub key: Row,
    pub action: AlarmAction,
    /// Who asked.
    pub by: String,
    pub note: String,
}

/// A worker's inbox, and what wakes its operator.
type Inbox = (Sender<AlarmCommand>, SyncActivator);

/// The inboxes of every running alarm operator, by alarm name.
#[derive(Default)]
pub struct AlarmDesk {
    inboxes: Mutex<HashMap<String, Vec<Inbox>>>,
    /// In a cluster: commands given here, for the other processes' workers.
    for_other_processes: Mutex<Option<Vec<(String, AlarmCommand)>>>,
}

impl std::fmt::Debug for AlarmDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlarmDesk").finish_non_exhaustive()
    }
}

impl AlarmDesk {
    /// A worker's inbox for `alarm`; `activator` wakes its operator.
    pub fn register(&self, alarm: &str, activator: SyncActivator) -> Receiver<AlarmCommand> {
        let (sender, receiver) = channel();
        self.inboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(alarm.to_string())
            .or_default()
            .push((sender, activator));
        receiver
    }

    /// Keeps every command sent from now on for the other processes of a cluster as well.
    pub fn forward_to_other_processes(&self) {
        let mut forwarded = self
            .for_other_processes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        forwarded.get_or_insert_with(Vec::new);
    }

    /// The commands sent since the last call, for the other processes (none outside a cluster).
    pub fn take_forwarded(&self) -> Vec<(String, AlarmCommand)> {
        self.for_other_processes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Delivers `command` to every worker running `alarm`, in this process and (in a cluster)
    /// the others; false when none here is.
    pub fn send(&self, alarm: &str, command: AlarmCommand) -> bool {
        if let Some(forwarded) = self
            .for_other_processes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            forwarded.push((alarm.to_string(), command.clone()));
        }
        self.deliver(alarm, command)
    }

    /// Delivers `command` to this process's workers running `alarm`; false when none is.
    pub fn deliver(&self, alarm: &str, command: AlarmCommand) -> bool {
        let mut inboxes = self.inboxes.lock().unwrap_or_else(|p| p.into_inner());
        let Some(workers) = inboxes.get_mut(alarm) else {
            return false;
        };
        // Workers whose operator has ended drop their receiver.
        workers.retain(|(sender, activator)| {
            sender.send(command.clone()).is_ok() && activator.activate().is_ok()
        });
        !workers.is_empty()
    }
}
