//! The dataflow's end of a live view: changes gathered on worker 0, grouped by timestamp, and
//! published to the [`LiveView`] once the frontier says a timestamp is complete — so subscribers
//! only ever see consistent states of the view.

use std::collections::BTreeMap;
use std::sync::Arc;

use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use vibelux_operators::row::{Row, Update};

use super::view::LiveView;

/// Sums the diffs of equal rows and drops those that cancel.
pub fn consolidate_diffs(mut updates: Vec<(Row, i64)>) -> Vec<(Row, i64)> {
    updates.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(Row, i64)> = Vec::with_capacity(updates.len());
    for (row, diff) in updates {
        match out.last_mut() {
            Some((last, total)) if *last == row => *total += diff,
            _ => out.push((row, diff)),
        }
    }
    out.retain(|(_, diff)| *diff != 0);
    out
}

pub trait PublishViewExt {
    /// Publishes the changes to `view`, which only worker 0 holds.
    fn publish_view(self, view: Option<Arc<LiveView>>);
}

impl PublishViewExt for Stream<'_, u64, Vec<Update>> {
    fn publish_view(self, view: Option<Arc<LiveView>>) {
        let mut pending: BTreeMap<u64, Vec<(Row, i64)>> = BTreeMap::new();
        let mut published: Option<Option<u64>> = None;
        self.sink(
            Exchange::new(|_: &Update| 0),
            "PublishView",
            move |(input, frontier)| {
                input.for_each(|_, data| {
                    for (row, time, diff) in data.drain(..) {
                        pending.entry(time).or_default().push((row, diff));
                    }
                });
                let Some(view) = &view else { return };
                let now = frontier.frontier().first().copied();
                let bound = now.unwrap_or(u64::MAX);
                let ready_exists = pending.first_key_value().is_some_and(|(t, _)| *t < bound);
                if published == Some(now) && !ready_exists {
                    return;
                }
                let later = match now {
                    Some(bound) => pending.split_off(&bound),
                    None => BTreeMap::new(),
                };
                let ready = std::mem::replace(&mut pending, later);
                let ticks = ready
                    .into_iter()
                    .map(|(time, updates)| (time, consolidate_diffs(updates)))
                    .collect();
                view.publish(ticks, now);
                published = Some(now);
            },
        );
    }
}
