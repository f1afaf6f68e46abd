//! Delivery rounds: how one view's changes reach thousands of subscribers without a timer each.
//!
//! Sending is what costs with many subscribers — a socket write per subscriber per send — so
//! the number of sends, not the number of changes, must stay bounded. A pacer per view gathers
//! everything that completed since the last round into one [`Round`], encodes it once, and
//! wakes every subscriber; the next round starts when nearly all of them have written this
//! one (or a short wait has passed). This is group commit: with few subscribers a round is a
//! single tick sent at once, with ten thousand a round spans what arrived while the previous
//! one was going out, so rounds are exactly as frequent as the machine can deliver them and
//! latency stays about two rounds' delivery time. Subscribers that are not at the round's start
//! (new, resuming, filtered, slow) build their own messages from the round or the view's log.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

use super::protocol::{Envelope, complete_message, progress_message, updates_message};
use super::view::{LiveView, Since, Tick};

/// Everything that completed in `[from, to)`, for every subscriber whose cursor is `from`.
pub struct Round {
    pub from: u64,
    pub to: u64,
    /// The view's input has ended: `to` is its final frontier.
    pub closed: bool,
    pub ticks: Vec<Arc<Tick>>,
    encoded: OnceLock<Arc<[Utf8Bytes]>>,
    /// Subscribers when the round went out, and how many have finished with it.
    expected: usize,
    finished: AtomicUsize,
    quorum_reached: Notify,
}

impl Round {
    fn new(from: u64, to: u64, closed: bool, ticks: Vec<Arc<Tick>>, expected: usize) -> Self {
        Round {
            from,
            to,
            closed,
            ticks,
            encoded: OnceLock::new(),
            expected,
            finished: AtomicUsize::new(0),
            quorum_reached: Notify::new(),
        }
    }

    /// The round before any: nothing to send.
    pub fn empty(at: u64) -> Self {
        Round::new(at, at, false, Vec::new(), 0)
    }

    /// The unfiltered `diff` messages of the round — each tick's changes, then progress (or
    /// `complete`) at `to` — encoded once and shared by every subscriber at `from`.
    pub fn messages(&self, view: &LiveView) -> Arc<[Utf8Bytes]> {
        self.encoded
            .get_or_init(|| {
                let mut messages: Vec<Utf8Bytes> = self
                    .ticks
                    .iter()
                    .map(|tick| {
                        tick.encoded
                            .get_or_init(|| {
                                updates_message(view, tick.time, &tick.updates, Envelope::Diff)
                                    .into()
                            })
                            .clone()
                    })
                    .collect();
                messages.push(if self.closed {
                    complete_message(self.to).into()
                } else {
                    progress_message(self.to).into()
                });
                messages.into()
            })
            .clone()
    }

    /// A subscriber has written the round (or had nothing to write).
    pub fn finished(&self) {
        let finished = self.finished.fetch_add(1, Ordering::AcqRel) + 1;
        if finished == quorum(self.expected) {
            self.quorum_reached.notify_one();
        }
    }
}

/// How many subscribers must finish a round before the next starts: all of a few, and all but
/// one in sixteen of many, so a handful of slow readers cannot hold everyone back.
fn quorum(expected: usize) -> usize {
    if expected < 16 {
        expected
    } else {
        expected - expected / 16
    }
}

/// The longest a round waits for its quorum: subscribers still writing then catch up from
/// the view's log on a later round.
fn longest_wait(expected: usize) -> Duration {
    (Duration::from_millis(10) + Duration::from_micros(10) * expected as u32)
        .min(Duration::from_millis(100))
}

/// Runs one view's rounds until the view completes or is dropped.
pub async fn pace(view: Weak<LiveView>) {
    let Some(mut frontier_moved) = view.upgrade().map(|view| view.watch()) else {
        return;
    };
    let mut from = match view.upgrade() {
        Some(view) => view.progress().0,
        None => return,
    };
    loop {
        let round = loop {
            let Some(view) = view.upgrade() else { return };
            let (frontier, closed) = view.progress();
            if frontier > from || closed {
                match view.since(from) {
                    Since::Ticks {
                        ticks,
                        frontier,
                        closed,
                    } => {
                        let round = Round::new(from, frontier, closed, ticks, view.subscribers());
                        break view.start_round(round);
                    }
                    // The log moved past the last round (the pacer waited while a burst was
                    // trimmed): subscribers there have fallen behind and will be told so.
                    Since::Behind { oldest } => {
                        from = oldest;
                        continue;
                    }
                }
            }
            drop(view);
            if frontier_moved.changed().await.is_err() {
                return;
            }
        };
        if round.closed {
            return;
        }
        from = round.to;
        if round.expected > 0 {
            let _ = tokio::time::timeout(
                longest_wait(round.expected),
                round.quorum_reached.notified(),
            )
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_slow_subscribers_do_not_hold_a_round() {
        assert_eq!(quorum(0), 0);
        assert_eq!(quorum(3), 3);
        assert_eq!(quorum(10_000), 9_375);
        assert_eq!(longest_wait(1), Duration::from_micros(10_010));
        assert_eq!(longest_wait(10_000), Duration::from_millis(100));
    }
}
