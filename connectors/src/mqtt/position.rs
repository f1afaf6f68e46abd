//! Which journaled messages a worker has taken in: its checkpointed position, and how a run with
//! another number of workers shares out the positions of the run it resumes from.
//!
//! Messages go to a worker chosen by a hash of their topic modulo the worker count, and each
//! worker takes its messages in journal order; so one number per worker — the last message it
//! took in — says which of its messages it has. With another worker count the same topic goes
//! to another worker, and that worker's messages no longer form a prefix of the journal: some
//! were taken by one old worker, some by another, each up to its own number. So a run that
//! resumes from positions of another count keeps them, as a *generation*: a message counts as
//! taken if the old worker that owned it had taken it. A generation stops mattering to a worker
//! once it has taken in a message past all of the generation's numbers, and is then dropped: it
//! lives until the journal's backlog is replayed, a few moments after the start.

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;

use serde::{Deserialize, Serialize};

/// How a source picks the worker of a topic: messages that hash alike stay on one worker.
pub type Route = fn(&str, &mut DefaultHasher);

/// The worker of `workers` that owns `topic`.
pub fn owner(route: Route, topic: &str, workers: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    route(topic, &mut hasher);
    (hasher.finish() % workers.max(1) as u64) as usize
}

/// Where a journaled reader is, for a checkpoint: the last journaled message it took in, the
/// generations of an earlier worker count it resumed from, and what its decoder has learnt from
/// the messages before (a Sparkplug host's births).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JournalPosition {
    /// The journal the numbers index: in a cluster, the number of processes and the one whose
    /// journal it is (each process journals what its own client receives); `None` in one
    /// process.
    pub journal_of: Option<(u32, u32)>,
    pub taken: u64,
    /// Each: per worker of an earlier run with another worker count, the last message it took
    /// in.
    pub earlier: Vec<Vec<u64>>,
    pub decoder: Option<Vec<u8>>,
}

impl JournalPosition {
    pub fn decode(part: &[u8]) -> Result<JournalPosition, String> {
        vibelux_interfaces::checkpoint::decode("journal position", part)
    }

    /// Whether the message numbered `sequence`, on `topic`, was taken in already.
    pub fn has_taken(&self, route: Route, topic: &str, sequence: u64) -> bool {
        sequence <= self.taken
            || self
                .earlier
                .iter()
                .any(|taken| sequence <= taken[owner(route, topic, taken.len())])
    }

    /// Takes in the message numbered `sequence`; drops the generations that no longer decide
    /// anything for this worker.
    pub fn take(&mut self, sequence: u64) {
        self.taken = self.taken.max(sequence);
        let taken = self.taken;
        self.earlier
            .retain(|generation| generation.iter().any(|&number| number > taken));
    }

    /// Every message up to this number has been taken in, whichever worker owns it: the
    /// journal may forget them once a checkpoint holding this position is stored.
    pub fn covered_through(&self) -> u64 {
        self.earlier
            .iter()
            .map(|generation| generation.iter().copied().min().unwrap_or(0))
            .fold(self.taken, u64::max)
    }

    /// The positions of a run of `workers` workers resuming from `old`, one per worker of the
    /// run that stored them (none: a fresh start).
    pub fn share_out(old: Vec<JournalPosition>, workers: usize) -> Vec<JournalPosition> {
        if old.is_empty() {
            return vec![JournalPosition::default(); workers];
        }
        if old.len() == workers {
            return old;
        }
        // Each old worker's generations matter only for its own messages, which it took in
        // past every generation it dropped: its number in the new generation covers those.
        let mut earlier: Vec<Vec<u64>> = Vec::new();
        for position in &old {
            for generation in &position.earlier {
                if !earlier.contains(generation) {
                    earlier.push(generation.clone());
                }
            }
        }
        earlier.push(old.iter().map(|position| position.taken).collect());
        let fresh = JournalPosition {
            journal_of: None,
            taken: 0,
            earlier,
            decoder: None,
        };
        vec![fresh; workers]
    }
}

/// Checks that a run can resume from `positions` (a checkpoint's, one per worker of the run that
/// took it): each process's journal holds only what its own client received, so positions
/// taken in a cluster index the journals of that cluster's processes, and only a run with the
/// same processes and workers holds them; one process reads its single journal.
pub(crate) fn check_journals(
    positions: &[JournalPosition],
    start: &vibelux_interfaces::connector::SourceStart,
) -> Result<(), String> {
    let taken_by = positions
        .iter()
        .find_map(|position| position.journal_of)
        .map_or(1, |(processes, _)| processes as usize);
    let threads = start.local.len().max(1);
    let same = match start.processes {
        _ if positions.is_empty() => true,
        1 => taken_by == 1,
        processes => {
            positions.len() == start.workers
                && positions.iter().enumerate().all(|(worker, position)| {
                    position.journal_of == Some((processes as u32, (worker / threads) as u32))
                })
        }
    };
    if same {
        return Ok(());
    }
    Err(format!(
        "the checkpoint was taken by {taken_by} process(es) with {} worker(s) in all, and this \
         run has {} with {}: an MQTT or Sparkplug source resumes only with the same processes \
         and workers, since each process journals what its own client received (run as before \
         until the journal is replayed, or start afresh with another --state)",
        positions.len(),
        start.processes,
        start.workers
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hash;

    fn by_topic(topic: &str, hasher: &mut DefaultHasher) {
        topic.hash(hasher);
    }

    /// A journal of 600 messages over 40 topics, and the set of (topic, sequence) each worker
    /// of a run has taken in when the run's workers stop at the given numbers.
    fn journal() -> Vec<(String, u64)> {
        (1..=600)
            .map(|sequence| (format!("room/{}", sequence * 7 % 40), sequence))
            .collect()
    }

    /// Runs `workers` readers over the journal from `positions`, each taking its messages that
    /// are not taken yet, stopping once past `stop_at[worker]`; returns the messages taken and
    /// the positions.
    fn run(
        positions: Vec<JournalPosition>,
        workers: usize,
        stop_at: &[u64],
    ) -> (Vec<u64>, Vec<JournalPosition>) {
        let mut positions = JournalPosition::share_out(positions, workers);
        let mut taken = Vec::new();
        for (topic, sequence) in journal() {
            let worker = owner(by_topic, &topic, workers);
            if sequence > stop_at[worker] {
                continue;
            }
            // Once a worker passes its stop it takes nothing more (it stopped there).
            if positions[worker].has_taken(by_topic, &topic, sequence) {
                continue;
            }
            positions[worker].take(sequence);
            taken.push(sequence);
        }
        (taken, positions)
    }

    #[test]
    fn every_message_is_taken_once_across_runs_of_changing_worker_counts() {
        // 3 workers stopping at different points, then 2, then 5, then 1 to the end.
        let (mut all, positions) = run(Vec::new(), 3, &[100, 250, 40]);
        let (taken, positions) = run(positions, 2, &[300, 180]);
        all.extend(taken);
        let (taken, positions) = run(positions, 5, &[320, 450, 200, 500, 310]);
        all.extend(taken);
        let (taken, positions) = run(positions, 1, &[u64::MAX]);
        all.extend(taken);
        all.sort_unstable();
        assert_eq!(all, (1..=600).collect::<Vec<_>>());
        // Past the end of the backlog no generation is left.
        assert!(positions[0].earlier.is_empty());
        assert_eq!(positions[0].covered_through(), 600);
    }

    #[test]
    fn a_resumed_worker_covers_only_what_every_old_worker_had_passed() {
        let old = vec![
            JournalPosition {
                journal_of: None,
                taken: 90,
                ..Default::default()
            },
            JournalPosition {
                journal_of: None,
                taken: 40,
                ..Default::default()
            },
        ];
        let shared = JournalPosition::share_out(old, 3);
        assert!(
            shared
                .iter()
                .all(|position| position.covered_through() == 40)
        );
    }

    #[test]
    fn the_same_worker_count_keeps_each_workers_position() {
        let old = vec![
            JournalPosition {
                journal_of: None,
                taken: 5,
                ..Default::default()
            },
            JournalPosition {
                journal_of: None,
                taken: 7,
                earlier: vec![vec![9, 3]],
                decoder: None,
            },
        ];
        assert_eq!(JournalPosition::share_out(old.clone(), 2), old);
    }
}
