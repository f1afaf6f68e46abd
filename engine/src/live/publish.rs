//! The dataflow's end of a live view: changes gathered on worker 0, grouped by timestamp, and
//! published to the [`LiveView`] once the frontier says a timestamp is complete — so subscribers
//! only ever see consistent states of the view.

use std::collections::BTreeMap;
use std::sync::Arc;

use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use vibelux_interfaces::checkpoint::{Participant, decode};
use vibelux_interfaces::wire::Wire;
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
    /// Publishes the changes to `view`, which only worker 0 holds. With `checkpointing` (on
    /// worker 0), the view's contents take part in checkpoints and are restored from the one
    /// the run resumes from. When the run `crosses_processes`, changes travel to worker 0 in
    /// the compact form of [`Wire`].
    fn publish_view(
        self,
        view: Option<Arc<LiveView>>,
        checkpointing: Option<Participant>,
        crosses_processes: bool,
    );
}

impl PublishViewExt for Stream<'_, u64, Vec<Update>> {
    fn publish_view(
        self,
        view: Option<Arc<LiveView>>,
        checkpointing: Option<Participant>,
        crosses_processes: bool,
    ) {
        if crosses_processes {
            publish(self.map(Wire), view, checkpointing);
        } else {
            publish(self, view, checkpointing);
        }
    }
}

/// Gathers the changes, `Update`s or wrapped ones, on worker 0 and publishes them.
fn publish<D>(
    changes: Stream<'_, u64, Vec<D>>,
    view: Option<Arc<LiveView>>,
    checkpointing: Option<Participant>,
) where
    D: timely::ExchangeData + Into<Update>,
{
    if let (Some(view), Some(part)) = (
        &view,
        checkpointing.as_ref().and_then(Participant::restored),
    ) {
        match decode::<Vec<(Row, i64)>>("live view contents", &part) {
            Ok(contents) => view.restore(contents, 0),
            Err(error) => panic!("{error}"),
        }
    }
    let mut pending: BTreeMap<u64, Vec<(Row, i64)>> = BTreeMap::new();
    let mut published: Option<Option<u64>> = None;
    let mut answered = 0;
    let mut finished = false;
    changes.sink(
        Exchange::new(|_: &D| 0),
        "PublishView",
        move |(input, frontier)| {
            input.for_each(|_, data| {
                for (row, time, diff) in data.drain(..).map(Into::into) {
                    pending.entry(time).or_default().push((row, diff));
                }
            });
            let Some(view) = &view else { return };
            let mut now = frontier.frontier().first().copied();
            let cut = checkpointing.as_ref().and_then(|p| p.pending(answered));
            // While a cut is being taken, publish only what precedes it: the contents are
            // the view's part as they stand at the cut.
            let due = cut.filter(|cut| now.is_none_or(|now| now >= cut.time));
            if let Some(cut) = cut {
                now = Some(now.map_or(cut.time, |now| now.min(cut.time)));
            }
            publish_ready(view, &mut pending, &mut published, now);
            if let (Some(participant), Some(cut)) = (&checkpointing, due) {
                participant.submit_encoded(cut, &view.contents_in_order());
                answered = cut.id;
                let now = frontier.frontier().first().copied();
                publish_ready(view, &mut pending, &mut published, now);
            }
            if frontier.frontier().is_empty() && !finished {
                finished = true;
                publish_ready(view, &mut pending, &mut published, None);
                if let Some(participant) = &checkpointing {
                    participant.submit_final_encoded(&view.contents_in_order(), None);
                }
            }
        },
    );
}

/// Publishes the timestamps before `now` (all of them when the input has ended).
fn publish_ready(
    view: &LiveView,
    pending: &mut BTreeMap<u64, Vec<(Row, i64)>>,
    published: &mut Option<Option<u64>>,
    now: Option<u64>,
) {
    let bound = now.unwrap_or(u64::MAX);
    let ready_exists = pending.first_key_value().is_some_and(|(t, _)| *t < bound);
    if *published == Some(now) && !ready_exists {
        return;
    }
    let later = match now {
        Some(bound) => pending.split_off(&bound),
        None => BTreeMap::new(),
    };
    let ready = std::mem::replace(pending, later);
    let ticks = ready
        .into_iter()
        .map(|(time, updates)| (time, consolidate_diffs(updates)))
        .collect();
    view.publish(ticks, now);
    *published = Some(now);
}
