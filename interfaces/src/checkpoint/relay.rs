//! Checkpoints of a cluster of processes: one process decides, the others follow.
//!
//! A cut is agreed through memory the workers of one process share (`Checkpoints`). Across
//! processes that memory is not shared, so each process keeps its own and process 0's is the
//! one that decides: it registers every process's participants, hears every source's report,
//! decides the cut, collects every part and stores the checkpoint. The others relay what their
//! participants do (registered, built, reported, a part, a final part, spoiled) and apply what
//! process 0 decides (a checkpoint requested, its cut, resolved, stored or failed, the run's
//! last one). The messages themselves travel on a small timely dataflow beside the run's (the
//! engine's `cluster_link.rs`), which keeps each pair of processes' messages in order; every
//! message is recorded under the same lock as the change it reports, so the order it leaves in
//! is the order things happened in.
//!
//! A cut takes one more step in a cluster: an operator sees its frontier move when sources in
//! any process move, and the message carrying the cut may reach its process later than that.
//! An operator that saw its frontier pass the cut before it knew of it would already have
//! emitted (windows closed, at the cut or later) what its snapshot must still hold. So every
//! process acknowledges the cut, and only once all have does process 0 release the sources,
//! its own and (by another message) the others', to move past it.
//!
//! Nothing else changes for participants: they call the same methods in every process.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use super::{Checkpoints, Cut};

/// A process's place in agreeing on checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A run in one process: it decides alone.
    Alone,
    /// Process 0 of a cluster: it decides for every process and stores the checkpoints.
    Leader,
    /// Another process of a cluster: it follows process 0's decisions.
    Follower,
}

/// What one process tells another about checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Relayed {
    // From a follower to the leader: what its participants did.
    Registered {
        key: String,
        source: bool,
    },
    Built,
    Reported {
        id: u64,
        key: String,
        held: u64,
    },
    Part {
        id: u64,
        key: String,
        part: Vec<u8>,
    },
    Final {
        key: String,
        part: Vec<u8>,
        emitted_up_to: Option<u64>,
    },
    Spoiled {
        key: String,
        why: String,
    },
    /// The follower knows the cut: its operators will snapshot at it.
    Acknowledged {
        id: u64,
    },
    // From the leader to every follower: what it decided.
    Requested {
        id: u64,
    },
    Cut {
        cut: Cut,
        groups: Vec<u64>,
    },
    /// Every process knows the cut: sources may move past it.
    Released {
        id: u64,
    },
    /// The checkpoint under way has every part: no cut is being taken any more.
    Resolved,
    Stored {
        id: u64,
    },
    Failed {
        why: String,
    },
    /// The run's last checkpoint (every part final) has this number.
    LastIs {
        id: u64,
    },
}

impl Relayed {
    /// The message without the bytes of a part, for logs.
    pub fn summary(&self) -> String {
        match self {
            Relayed::Part { id, key, part } => {
                format!("Part {{ id: {id}, key: {key}, {} bytes }}", part.len())
            }
            Relayed::Final {
                key,
                part,
                emitted_up_to,
            } => format!(
                "Final {{ key: {key}, {} bytes, emitted up to {emitted_up_to:?} }}",
                part.len()
            ),
            other => format!("{other:?}"),
        }
    }
}

/// This process's role and the messages waiting to leave it.
#[derive(Default)]
pub(super) struct Relay {
    role: AtomicU8,
    /// The deciding process's count of the others.
    followers: AtomicUsize,
    outbox: Mutex<Vec<Relayed>>,
}

impl Relay {
    fn push(&self, message: Relayed) {
        self.outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(message);
    }
}

impl Checkpoints {
    /// Sets this process's role in a cluster of `processes`, before any worker starts.
    pub fn set_role(&self, role: Role, processes: usize) {
        let code = match role {
            Role::Alone => 0,
            Role::Leader => 1,
            Role::Follower => 2,
        };
        self.relay.role.store(code, Ordering::Release);
        let followers = match role {
            Role::Leader => processes.saturating_sub(1),
            Role::Alone | Role::Follower => 0,
        };
        self.relay.followers.store(followers, Ordering::Release);
    }

    /// The processes that follow this one's decisions.
    pub(super) fn followers(&self) -> usize {
        self.relay.followers.load(Ordering::Acquire)
    }

    pub fn role(&self) -> Role {
        match self.relay.role.load(Ordering::Acquire) {
            1 => Role::Leader,
            2 => Role::Follower,
            _ => Role::Alone,
        }
    }

    /// The messages for other processes recorded since the last call, in order.
    pub fn take_relayed(&self) -> Vec<Relayed> {
        std::mem::take(&mut *self.relay.outbox.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Records a message for the leader (a follower's participants' doings).
    pub(super) fn to_leader(&self, message: Relayed) {
        if self.role() == Role::Follower {
            self.relay.push(message);
        }
    }

    /// Records a message for every follower (the leader's decisions).
    pub(super) fn to_followers(&self, message: Relayed) {
        if self.role() == Role::Leader {
            self.relay.push(message);
        }
    }

    /// Each group's cut time, as decided.
    pub(super) fn group_cut_times(&self) -> Vec<u64> {
        self.group_times
            .iter()
            .map(|time| time.load(Ordering::Acquire))
            .collect()
    }

    /// Applies a message from another process: the leader takes in what a follower's
    /// participants did, as if they were its own; a follower takes the leader's decisions.
    /// A message that does not belong to this process's role is an error in the cluster's
    /// wiring, named in the result.
    pub fn apply_relayed(&self, message: Relayed) -> Result<(), String> {
        tracing::debug!(role = ?self.role(), message = message.summary(), "relayed checkpoint message");
        match (self.role(), message) {
            (Role::Leader, Relayed::Registered { key, source }) => self.register(&key, source),
            (Role::Leader, Relayed::Built) => self.built(),
            (Role::Leader, Relayed::Reported { id, key, held }) => {
                let mut progress = self.lock();
                if progress.requested == Some(id) && progress.cut.is_none() {
                    progress.reports.entry(key).or_insert(Some(held));
                    self.decide_cut(&mut progress);
                }
            }
            (Role::Leader, Relayed::Part { id, key, part }) => self.submit(&key, id, part),
            (
                Role::Leader,
                Relayed::Final {
                    key,
                    part,
                    emitted_up_to,
                },
            ) => self.leave_final(&key, part.into(), emitted_up_to),
            (Role::Leader, Relayed::Spoiled { key, why }) => self.spoil(&key, why),
            (Role::Leader, Relayed::Acknowledged { id }) => {
                let mut progress = self.lock();
                if progress.cut.is_some_and(|cut| cut.id == id) && !progress.released {
                    progress.acknowledged += 1;
                    if progress.acknowledged >= self.followers() {
                        progress.released = true;
                        self.to_followers(Relayed::Released { id });
                        drop(progress);
                        self.changed();
                    }
                }
            }
            (Role::Follower, Relayed::Requested { id }) => {
                let mut progress = self.lock();
                progress.requested = Some(id);
                progress.cut = None;
                progress.reports.clear();
                progress.parts.clear();
                drop(progress);
                self.changed();
            }
            (Role::Follower, Relayed::Cut { cut, groups }) => {
                let mut progress = self.lock();
                for (time, decided) in self.group_times.iter().zip(groups) {
                    time.store(decided, Ordering::Release);
                }
                progress.requested = Some(cut.id);
                progress.cut = Some(cut);
                progress.released = false;
                self.cut_time.store(cut.time, Ordering::Release);
                self.cut_id.store(cut.id, Ordering::Release);
                // Recorded after the cut is readable here, so every operator of this process
                // knows it before any source moves past it.
                self.to_leader(Relayed::Acknowledged { id: cut.id });
                drop(progress);
                self.changed();
            }
            (Role::Follower, Relayed::Released { id }) => {
                let mut progress = self.lock();
                if progress.cut.is_some_and(|cut| cut.id == id) {
                    progress.released = true;
                    drop(progress);
                    self.changed();
                }
            }
            (Role::Follower, Relayed::Resolved) => {
                let mut progress = self.lock();
                progress.requested = None;
                progress.cut = None;
                progress.reports.clear();
                progress.parts.clear();
                self.cut_id.store(0, Ordering::Release);
                drop(progress);
                self.changed();
            }
            (Role::Follower, Relayed::Stored { id }) => self.mark_completed(id),
            (Role::Follower, Relayed::Failed { why }) => self.mark_failed(why),
            (Role::Follower, Relayed::LastIs { id }) => {
                let mut progress = self.lock();
                progress.final_taken = true;
                progress.final_id = Some(id);
                drop(progress);
                self.changed();
            }
            (role, message) => {
                return Err(format!(
                    "a {role:?} process cannot take this checkpoint message: {message:?}"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::checkpoint::SourceTurn;

    /// Delivers every waiting message between a leader and its followers until none is left.
    fn deliver(leader: &Checkpoints, followers: &[&Checkpoints]) {
        loop {
            let mut moved = false;
            for follower in followers {
                for message in follower.take_relayed() {
                    leader.apply_relayed(message).unwrap();
                    moved = true;
                }
            }
            let decided = leader.take_relayed();
            for message in decided {
                for follower in followers {
                    follower.apply_relayed(message.clone()).unwrap();
                }
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    fn process(role: Role) -> Checkpoints {
        let checkpoints = Checkpoints::new(0, BTreeMap::new());
        checkpoints.set_role(role, 2);
        checkpoints
    }

    #[test]
    fn a_cut_is_agreed_across_processes_and_every_part_reaches_the_leader() {
        // Two processes of one worker each: a source and a keyed operator per worker, and a
        // sink in process 0.
        let leader = process(Role::Leader);
        let follower = process(Role::Follower);
        leader.register("source/a/0", true);
        leader.register("node/1/0", false);
        leader.register("sink/out", false);
        leader.built();
        follower.register("source/a/1", true);
        follower.register("node/1/1", false);
        // Nothing starts before every worker of every process has built its dataflow.
        assert!(!leader.request(2));
        follower.built();
        deliver(&leader, &[&follower]);
        assert!(leader.request(2));
        deliver(&leader, &[&follower]);
        assert_eq!(leader.source_turn("source/a/0", 40), SourceTurn::Hold);
        // The follower's source holds a later time: the cut is one past it, for both.
        assert_eq!(follower.source_turn("source/a/1", 70), SourceTurn::Hold);
        assert_eq!(follower.current_cut(), None);
        deliver(&leader, &[&follower]);
        let cut = Cut { id: 1, time: 71 };
        assert_eq!(leader.current_cut(), Some(cut));
        assert_eq!(follower.current_cut(), Some(cut));
        assert_eq!(follower.source_turn("source/a/1", 70), SourceTurn::Cut(cut));
        follower.submit("source/a/1", 1, vec![11]);
        follower.submit("node/1/1", 1, vec![12]);
        assert_eq!(follower.source_turn("source/a/1", 71), SourceTurn::Free);
        leader.submit("source/a/0", 1, vec![1]);
        leader.submit("node/1/0", 1, vec![2]);
        leader.submit("sink/out", 1, vec![3]);
        assert!(leader.wait_complete(2, Duration::ZERO).is_none());
        deliver(&leader, &[&follower]);
        let completed = leader.wait_complete(2, Duration::ZERO).unwrap();
        assert_eq!(completed.cut, Some(cut));
        assert_eq!(completed.parts.get("node/1/1"), Some(&vec![12].into()));
        assert_eq!(completed.parts.len(), 5);
        leader.mark_completed(1);
        deliver(&leader, &[&follower]);
        assert_eq!(follower.current_cut(), None);
        assert_eq!(follower.completed(), 1);
    }

    #[test]
    fn no_source_moves_past_a_cut_before_every_process_knows_it() {
        // Process 1's source has read its share to the end: only process 0's holds the cut
        // back, and its moving on would move process 1's operators' frontiers past the cut.
        let leader = process(Role::Leader);
        let follower = process(Role::Follower);
        leader.register("source/a/0", true);
        leader.register("node/w/0", false);
        leader.built();
        follower.register("source/a/1", true);
        follower.register("node/w/1", false);
        follower.built();
        follower.submit_final_after("source/a/1", vec![1], 50);
        deliver(&leader, &[&follower]);
        assert!(leader.request(2));
        assert_eq!(leader.source_turn("source/a/0", 40), SourceTurn::Hold);
        let cut = Cut { id: 1, time: 51 };
        assert_eq!(leader.current_cut(), Some(cut));
        assert_eq!(follower.current_cut(), None);
        // Decided, but process 1 does not know it yet.
        assert_eq!(leader.source_turn("source/a/0", 40), SourceTurn::Hold);
        for message in leader.take_relayed() {
            follower.apply_relayed(message).unwrap();
        }
        assert_eq!(follower.current_cut(), Some(cut));
        assert_eq!(leader.source_turn("source/a/0", 40), SourceTurn::Hold);
        let acknowledged = follower.take_relayed();
        assert_eq!(acknowledged, vec![Relayed::Acknowledged { id: 1 }]);
        for message in acknowledged {
            leader.apply_relayed(message).unwrap();
        }
        assert_eq!(leader.source_turn("source/a/0", 40), SourceTurn::Cut(cut));
        assert_eq!(leader.take_relayed(), vec![Relayed::Released { id: 1 }]);
    }

    #[test]
    fn the_last_checkpoint_waits_for_every_processs_final_parts() {
        let leader = process(Role::Leader);
        let follower = process(Role::Follower);
        leader.register("source/a/0", true);
        leader.built();
        follower.register("source/a/1", true);
        follower.built();
        deliver(&leader, &[&follower]);
        leader.submit_final("source/a/0", vec![1]);
        assert!(leader.wait_complete(2, Duration::ZERO).is_none());
        follower.submit_final("source/a/1", vec![2]);
        deliver(&leader, &[&follower]);
        let last = leader.wait_complete(2, Duration::ZERO).unwrap();
        assert_eq!((last.cut, last.parts.len()), (None, 2));
        assert_eq!(follower.final_stored(), None);
        leader.mark_completed(last.id);
        deliver(&leader, &[&follower]);
        assert_eq!(follower.final_stored(), Some(true));
    }

    #[test]
    fn a_message_for_the_other_role_is_refused() {
        let follower = process(Role::Follower);
        let refused = follower.apply_relayed(Relayed::Built).unwrap_err();
        assert!(refused.contains("Follower"), "{refused}");
    }
}
