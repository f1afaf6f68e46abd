//! The table operator: reference data (setpoints, a sensor registry) kept by primary key.
//!
//! A table's input is a sequence of upserts and deletions: a row whose key is already present
//! replaces the old row; a deletion (a Kafka tombstone, a Debezium delete) removes its key's row.
//! The operator turns them into updates — `-old, +new`, or `-old` — so joins downstream retract
//! what they derived from the old row. Tables have no event time and must not hold the watermark back: a
//! replayed table is loaded at dataflow time 0, before any reading; a tailed table stamps each
//! change with the current time and keeps its capability there (see below). Reference data is
//! small, so worker 0 reads it all and the join routes it.
//!
//! A table's first load is collected to the input's end (a file's, or every Kafka partition's)
//! before any of it is applied, so joins never see the table half loaded — nor a row that a
//! later line of the same load deletes or replaces. A tailed table's file may also be replaced
//! whole (an editor saving by rename, `sed -i`): the reader then reads the new file from its
//! start, and the operator collects it the same way before applying the difference from what
//! it held — new and changed rows upserted, rows that are gone deleted.
//!
//! A tailed table's time is the later of the wall clock and the furthest event time any source
//! has reached ([`EventClock`](crate::source::EventClock)): a simulation running 60× or data
//! dated ahead of the clock would otherwise wait on the table, and no window after the wall
//! clock would close.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{Scope, Stream};
use vibelux_operators::row::{Row, Update};

use serde::{Deserialize, Serialize};
use vibelux_interfaces::checkpoint::{SourcePart, SourceTurn, decode, encode, in_key_order};

use crate::source::{Poll, Record, SourceControls, SourceMetrics, SourceReader, dead_letter_row};

mod contents;

pub use contents::TableColumns;
use contents::{Edit, TableContents};

/// What a checkpoint keeps of a table beside its reader's position: its rows, and a replacement
/// being read.
#[derive(Serialize, Deserialize)]
struct TableState<C = Vec<(Row, Row)>> {
    /// Owned when read back, borrowed from the state when written.
    current: C,
    replacement: Option<C>,
}

fn table_part(reader: &dyn SourceReader, contents: &TableContents, finished: bool) -> Vec<u8> {
    let state = TableState {
        current: in_key_order(&contents.current),
        replacement: contents.loading.as_ref().map(in_key_order),
    };
    encode(&SourcePart {
        position: reader
            .position()
            .expect("checkpointed runs read only tables that resume"),
        state: encode(&state),
        finished,
    })
}

/// The two outputs of a table: its changes, and input that could not be decoded.
pub struct TableStreams<'scope> {
    pub changes: Stream<'scope, u64, Vec<Update>>,
    pub dead_letters: Stream<'scope, u64, Vec<Row>>,
}

/// How long a table's load may take before the log says it is still loading.
const LOADING_WARNING: std::time::Duration = std::time::Duration::from_secs(30);

fn wall_clock_millis() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

/// Builds the operator keeping table `name` from `reader` (`None` on workers other than 0).
pub fn read_table<'scope>(
    scope: Scope<'scope, u64>,
    name: &str,
    mut reader: Option<Box<dyn SourceReader>>,
    columns: TableColumns,
    follow: bool,
    metrics: Arc<SourceMetrics>,
    controls: SourceControls,
) -> TableStreams<'scope> {
    // Tables are never held back by flow control: they are small and wait for no clock.
    let SourceControls {
        stop,
        checkpointing,
        event_clock,
        ..
    } = controls;
    let mut builder = OperatorBuilder::new(format!("Table({name})"), scope);
    let activator = scope.activator_for(builder.operator_info().address);
    let (changes_output, changes) = builder.new_output();
    let (dead_output, dead_letters) = builder.new_output();
    let mut changes_output = OutputBuilder::from(changes_output);
    let mut dead_output = OutputBuilder::from(dead_output);

    builder.build(move |capabilities| {
        let mut capabilities = reader.is_some().then_some(capabilities);
        let mut contents = TableContents::first_load();
        // Until its first load is applied a tailed table keeps its time where the run began,
        // so that the load applies to every reading, as a replayed table's does: readings read
        // first would otherwise meet an empty table, and windows after the join close without
        // them. (A restored table holds what it held.)
        let mut first_load = true;
        // A restored table holds what it held: the joins downstream hold it too.
        let restored = checkpointing
            .as_ref()
            .and_then(|c| c.checkpoints.take_restored(&c.key));
        if let Some(part) = restored {
            let state = decode::<SourcePart>("table", &part)
                .and_then(|part| decode::<TableState>("table rows", &part.state))
                .unwrap_or_else(|error| panic!("{error}"));
            contents = TableContents {
                current: state.current.into_iter().collect(),
                loading: state.replacement.map(|rows| rows.into_iter().collect()),
            };
            first_load = false;
        }
        let mut turn = SourceTurn::Free;
        let loading_since = std::time::Instant::now();
        let mut warned_loading = false;
        let mut records = Vec::new();
        let name = name.to_string();
        move |_frontiers| {
            let (Some(caps), Some(reader)) = (capabilities.as_mut(), reader.as_mut()) else {
                capabilities = None;
                return;
            };
            // The table's input ends here for good: its part stands for it from now on.
            let leave_final = |reader: &dyn SourceReader,
                               contents: &TableContents,
                               finished: bool,
                               emitted_up_to: u64| {
                if let Some(checkpointing) = &checkpointing {
                    checkpointing.checkpoints.submit_final_after(
                        &checkpointing.key,
                        table_part(reader, contents, finished),
                        emitted_up_to,
                    );
                }
            };
            if stop.load(Ordering::Relaxed) {
                leave_final(reader.as_ref(), &contents, false, *caps[0].time());
                capabilities = None;
                return;
            }
            if let Some(checkpointing) = &checkpointing {
                turn = checkpointing
                    .checkpoints
                    .source_turn(&checkpointing.key, *caps[0].time());
            }
            if follow && turn != SourceTurn::Hold && !first_load {
                // A change applies from the furthest time reached, by the clock or the data.
                let now = wall_clock_millis().max(event_clock.latest());
                if let (SourceTurn::Cut(cut), Some(checkpointing)) = (turn, &checkpointing)
                    && now >= cut.time
                {
                    // Everything emitted so far is stamped before the cut.
                    let part = table_part(reader.as_ref(), &contents, false);
                    checkpointing
                        .checkpoints
                        .submit(&checkpointing.key, cut.id, part);
                }
                if *caps[0].time() < now {
                    caps.iter_mut()
                        .for_each(|capability| capability.downgrade(&now));
                }
            }
            if turn == SourceTurn::Hold {
                activator.activate_after(std::time::Duration::from_millis(1));
            }
            let poll = reader.poll(&mut records, 1024);
            let time = *caps[0].time();
            let mut updates = Vec::new();
            let mut dead = Vec::new();
            for record in records.drain(..) {
                match record {
                    Record::Row { row, .. } => match columns.edit(row) {
                        Ok(Edit::Upsert(row)) => {
                            contents.upsert(columns.key_of(&row), row, time, &mut updates)
                        }
                        Ok(Edit::Retract(row)) => {
                            contents.retract(&columns.key_of(&row), &row, time, &mut updates)
                        }
                        Err((reason, raw)) => {
                            dead.push(dead_letter_row(reason, raw, format!("table {name}")))
                        }
                    },
                    Record::Delete { row, raw, origin } => match columns.deletion_key(&row) {
                        Ok(key) => contents.delete(&key, time, &mut updates),
                        Err(reason) => dead.push(dead_letter_row(reason, raw, origin)),
                    },
                    Record::Invalid {
                        reason,
                        raw,
                        origin,
                    } => dead.push(dead_letter_row(reason, raw, origin)),
                    // Files and topics have no status of their own.
                    Record::Status { .. } => {}
                    Record::Replaced { origin } => {
                        tracing::info!(table = %name, "{origin} was replaced: loading it again");
                        contents.reload();
                    }
                }
            }
            // The first load or the replacement has been read to its end: apply what changed.
            let read_to_end = match poll {
                Poll::Idle(_) => reader.caught_up(),
                Poll::Finished => true,
                _ => false,
            };
            if read_to_end && let Some(rows) = contents.finish_loading(time, &mut updates) {
                tracing::info!(table = %name, rows, "read to its end: the table holds {rows} rows");
                if first_load {
                    first_load = false;
                    activator.activate();
                }
            } else if contents.loading.is_some()
                && !warned_loading
                && loading_since.elapsed() >= LOADING_WARNING
            {
                // A Kafka topic that does not exist, a broker down: say why joins see nothing.
                warned_loading = true;
                tracing::warn!(
                    table = %name,
                    "not yet read to its end after {}s (a file's end, or every Kafka \
                     partition's): {}",
                    LOADING_WARNING.as_secs(),
                    if first_load {
                        "the readings joined with it wait for its first load"
                    } else {
                        "joins see the table as it was until it is"
                    }
                );
            }
            metrics.rows.fetch_add(
                updates.iter().filter(|(_, _, diff)| *diff > 0).count() as u64,
                Ordering::Relaxed,
            );
            metrics
                .dead_letters
                .fetch_add(dead.len() as u64, Ordering::Relaxed);
            if !updates.is_empty() {
                changes_output
                    .activate()
                    .session(&caps[0])
                    .give_container(&mut updates);
            }
            if !dead.is_empty() {
                dead_output
                    .activate()
                    .session(&caps[1])
                    .give_container(&mut dead);
            }
            metrics.observe(&name, 0, &poll);
            match poll {
                Poll::Ready => activator.activate(),
                Poll::Idle(wait) | Poll::Retry { after: wait, .. } => {
                    activator.activate_after(wait)
                }
                Poll::Finished => {
                    leave_final(reader.as_ref(), &contents, true, *caps[0].time());
                    capabilities = None;
                }
                Poll::Failed(_) => {
                    // A table read in part would make every join on it wrong: stop the run.
                    leave_final(reader.as_ref(), &contents, false, *caps[0].time());
                    stop.store(true, Ordering::Relaxed);
                    capabilities = None;
                }
            }
        }
    });
    TableStreams {
        changes,
        dead_letters,
    }
}
