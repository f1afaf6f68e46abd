//! The table operator: reference data (setpoints, a sensor registry) kept by primary key.
//!
//! A table's input is a sequence of upserts: a row whose key is already present replaces the old
//! row. The operator turns them into updates — `-old, +new` — so joins downstream retract what they
//! derived from the old row. Tables have no event time and must not hold the watermark back: a
//! replayed table is loaded at dataflow time 0, before any reading; a tailed table stamps each
//! change with the wall clock and keeps its capability there, which is never behind the watermark
//! of a live source. Reference data is small, so worker 0 reads it all and the join routes it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{Scope, Stream};
use vibelux_operators::row::{Row, Update};

use crate::source::{Poll, Record, SourceMetrics, SourceReader, dead_letter_row};

/// The two outputs of a table: its changes, and input that could not be decoded.
pub struct TableStreams<'scope> {
    pub changes: Stream<'scope, u64, Vec<Update>>,
    pub dead_letters: Stream<'scope, u64, Vec<Row>>,
}

fn wall_clock_millis() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

/// Builds the operator keeping table `name` from `reader` (`None` on workers other than 0).
pub fn read_table<'scope>(
    scope: Scope<'scope, u64>,
    name: &str,
    mut reader: Option<Box<dyn SourceReader>>,
    key_columns: Vec<usize>,
    follow: bool,
    metrics: Arc<SourceMetrics>,
    stop: Arc<AtomicBool>,
) -> TableStreams<'scope> {
    let mut builder = OperatorBuilder::new(format!("Table({name})"), scope);
    let activator = scope.activator_for(builder.operator_info().address);
    let (changes_output, changes) = builder.new_output();
    let (dead_output, dead_letters) = builder.new_output();
    let mut changes_output = OutputBuilder::from(changes_output);
    let mut dead_output = OutputBuilder::from(dead_output);

    builder.build(move |capabilities| {
        let mut capabilities = reader.is_some().then_some(capabilities);
        let mut current: HashMap<Row, Row> = HashMap::new();
        let mut records = Vec::new();
        move |_frontiers| {
            let (Some(caps), Some(reader)) = (capabilities.as_mut(), reader.as_mut()) else {
                capabilities = None;
                return;
            };
            if stop.load(Ordering::Relaxed) {
                capabilities = None;
                return;
            }
            if follow {
                let now = wall_clock_millis();
                if *caps[0].time() < now {
                    caps.iter_mut()
                        .for_each(|capability| capability.downgrade(&now));
                }
            }
            let poll = reader.poll(&mut records, 1024);
            let time = *caps[0].time();
            let mut updates = Vec::new();
            let mut dead = Vec::new();
            for record in records.drain(..) {
                match record {
                    Record::Row { row, .. } => {
                        let key: Row = key_columns
                            .iter()
                            .map(|&column| row[column].clone())
                            .collect();
                        if current.get(&key) == Some(&row) {
                            continue;
                        }
                        if let Some(old) = current.insert(key, row.clone()) {
                            updates.push((old, time, -1));
                        }
                        updates.push((row, time, 1));
                    }
                    Record::Invalid {
                        reason,
                        raw,
                        origin,
                    } => dead.push(dead_letter_row(reason, raw, origin)),
                    // Tables are read from files, which have no status of their own.
                    Record::Status { .. } => {}
                }
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
            match poll {
                Poll::Ready => activator.activate(),
                Poll::Idle(wait) => activator.activate_after(wait),
                Poll::Finished => capabilities = None,
            }
        }
    });
    TableStreams {
        changes,
        dead_letters,
    }
}
