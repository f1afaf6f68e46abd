//! One-minute windows per sensor (count and sum) on our own aggregate operator against
//! differential-dataflow's `reduce`, over the same readings made in memory, each run in a
//! process of its own so that its peak memory is its own (`bench/reduce.sh`). This is the
//! measurement behind keeping append-only windows on our operator (docs/architecture.md).
//!
//! The readings come as a source gives them: in batches, each batch's time the watermark (the
//! latest event time less a 5 s delay), so both operators see the same frontier. Our operator
//! closes a window once the frontier passes its end and forgets it; `reduce` keeps its input
//! arranged, every reading of every window, for changes that never come.

use std::cell::Cell;
use std::rc::Rc;

use differential_dataflow::input::InputSession;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::InputHandle;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::{Inspect, Probe};
use vibelux_operators::accumulator::{AggregateFunction, AggregateSpec};
use vibelux_operators::aggregate::{AggregateExt, AggregatePlan, AggregateSettings, WindowClose};
use vibelux_operators::row::{Datum, Update};
use vibelux_operators::window::WindowKind;

#[derive(clap::Args)]
pub struct ReduceArgs {
    /// `ours` (final windows only, as for a sink), `ours-changes` (every change of every window
    /// too, as for a materialized view: what `reduce` gives), `differential`, or `none` (making
    /// the readings alone, to subtract).
    engine: String,
    #[arg(long, default_value_t = 2_000_000)]
    rows: u64,
    #[arg(long, default_value_t = 1_000)]
    sensors: u64,
}

const BATCH: u64 = 1_024;
const WINDOW_MILLIS: u64 = 60_000;
const DELAY_MILLIS: u64 = 5_000;
const MILLI: i64 = 1_000_000;

/// Reading `index`: its sensor, event time (milliseconds; one a second per sensor, in turn) and
/// temperature in thousandths of a degree.
fn reading(index: u64, sensors: u64) -> (u64, u64, i64) {
    let sensor = index % sensors;
    let millis = index / sensors * 1_000 + sensor * 1_000 / sensors;
    let temp = 20_000 + (index.wrapping_mul(7_919) % 5_000) as i64;
    (sensor, millis, temp)
}

pub fn run(args: ReduceArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let windows = match args.engine.as_str() {
        "none" => {
            let mut sum = 0i64;
            for index in 0..args.rows {
                sum = sum.wrapping_add(reading(index, args.sensors).2);
            }
            std::hint::black_box(sum);
            0
        }
        "ours" => ours(args.rows, args.sensors, false),
        "ours-changes" => ours(args.rows, args.sensors, true),
        "differential" => differential(args.rows, args.sensors),
        other => anyhow::bail!("unknown engine {other:?}: ours, ours-changes, differential, none"),
    };
    eprintln!(
        "{}: {} readings, {windows} window rows out, {:.2} s",
        args.engine,
        args.rows,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Feeds the readings in batches, each at the watermark it leaves, stepping `worker` until
/// `probe` has passed it; `give` sends one reading at the batch's time.
fn feed(
    worker: &mut timely::worker::Worker,
    rows: u64,
    sensors: u64,
    probe: &ProbeHandle<u64>,
    mut give: impl FnMut((u64, u64, i64), u64),
    mut advance: impl FnMut(u64),
) {
    let mut watermark = 0;
    let mut start = 0;
    while start < rows {
        let end = (start + BATCH).min(rows);
        let mut latest = 0;
        for index in start..end {
            let reading = reading(index, sensors);
            latest = latest.max(reading.1);
            give(reading, watermark);
        }
        watermark = watermark.max(latest.saturating_sub(DELAY_MILLIS));
        advance(watermark);
        worker.step_while(|| probe.less_than(&watermark));
        start = end;
    }
}

fn ours(rows: u64, sensors: u64, emit_changes: bool) -> u64 {
    timely::execute_directly(move |worker| {
        let plan = std::sync::Arc::new(AggregatePlan {
            key_columns: 2,
            aggregates: vec![
                spec(AggregateFunction::CountRows, None),
                spec(AggregateFunction::SumInt, Some(2)),
            ],
            input_retracts: false,
            window: Some(WindowClose {
                key_column: 1,
                ends_of_starts: Some(WindowKind::Tumble {
                    size: WINDOW_MILLIS as i64 * MILLI,
                    offset: 0,
                    zone: None,
                }),
                lateness_nanos: 0,
            }),
            session: None,
        });
        let settings = AggregateSettings {
            emit_changes,
            ..AggregateSettings::changes()
        };
        let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<Update>>>::new();
        let probe = ProbeHandle::new();
        let out = Rc::new(Cell::new(0u64));
        worker.dataflow::<u64, _, _>(|scope| {
            let (changes, finals) = input.to_stream(scope).aggregate(plan, settings);
            let counted = out.clone();
            changes
                .inspect(move |_| counted.set(counted.get() + 1))
                .probe_with(&probe);
            let counted = out.clone();
            finals
                .inspect(move |_| counted.set(counted.get() + 1))
                .probe_with(&probe);
        });
        let names: Vec<Datum> = (0..sensors)
            .map(|sensor| Datum::Utf8(format!("s{sensor:04}").into()))
            .collect();
        let time = std::cell::RefCell::new(input);
        feed(
            worker,
            rows,
            sensors,
            &probe,
            |(sensor, millis, temp), now| {
                let start = (millis - millis % WINDOW_MILLIS) as i64 * MILLI;
                let row = vec![
                    names[sensor as usize].clone(),
                    Datum::Timestamp(start),
                    Datum::Int64(temp),
                ];
                time.borrow_mut().send((row, now, 1));
            },
            |watermark| time.borrow_mut().advance_to(watermark),
        );
        drop(time);
        while worker.step() {}
        out.get()
    })
}

fn spec(function: AggregateFunction, argument: Option<usize>) -> AggregateSpec {
    AggregateSpec {
        function,
        argument,
        order_by: None,
        reference: None,
        filter: None,
    }
}

fn differential(rows: u64, sensors: u64) -> u64 {
    timely::execute_directly(move |worker| {
        let mut input = InputSession::<u64, ((u64, u64), i64), isize>::new();
        let probe = ProbeHandle::new();
        let out = Rc::new(Cell::new(0u64));
        worker.dataflow::<u64, _, _>(|scope| {
            let counted = out.clone();
            input
                .to_collection(scope)
                .reduce(|_window, readings, output| {
                    let count: isize = readings.iter().map(|(_, n)| *n).sum();
                    let sum: i64 = readings.iter().map(|(t, n)| **t * *n as i64).sum();
                    output.push(((count, sum), 1isize));
                })
                .inner
                .inspect(move |_| counted.set(counted.get() + 1))
                .probe_with(&probe);
        });
        let session = std::cell::RefCell::new(input);
        feed(
            worker,
            rows,
            sensors,
            &probe,
            |(sensor, millis, temp), _| {
                let start = millis - millis % WINDOW_MILLIS;
                session.borrow_mut().update(((sensor, start), temp), 1);
            },
            |watermark| {
                let mut session = session.borrow_mut();
                session.advance_to(watermark);
                session.flush();
            },
        );
        drop(session);
        while worker.step() {}
        out.get()
    })
}
