//! Window assignment: `TUMBLE` and `HOP` as operators that tag rows with their windows.
//!
//! A window table function adds `window_start` and `window_end` to every row of its input, one
//! output row per window the row falls in (one for a tumbling window, `size / slide` for a hopping
//! one). Assignment reads only the row's event time, so it is stateless and deterministic; when a
//! window is complete is decided downstream, by the aggregate that groups on it (see
//! `aggregate.rs`).

use std::rc::Rc;

use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::local_time::TimeZone;
use crate::row::{Datum, Row, Update};

/// Which windows a row belongs to. Sizes are in nanoseconds, like event times.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowKind {
    /// Windows start at `offset` past each multiple of `size` since the Unix epoch, on the UTC
    /// clock or on `zone`'s: a day starting at 06:00 is `size` one day, `offset` six hours.
    Tumble {
        size: i64,
        #[serde(default)]
        offset: i64,
        #[serde(default)]
        zone: Option<TimeZone>,
    },
    Hop {
        slide: i64,
        size: i64,
        #[serde(default)]
        offset: i64,
        #[serde(default)]
        zone: Option<TimeZone>,
    },
    /// Each row starts a proto-session `[ts, ts + gap)`; the aggregate grouping on it merges
    /// overlapping sessions of the same key (see `aggregate.rs`).
    Session { gap: i64 },
}

/// Checkpoints key a node's state by its plan's text (`queries::plan::node_definition`): a
/// window without a time zone prints as it did before zones existed, so the state of a
/// windowed view taken by an earlier build resumes.
impl std::fmt::Debug for WindowKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let with_zone = |f: &mut std::fmt::DebugStruct<'_, '_>, zone: &Option<TimeZone>| {
            if let Some(zone) = zone {
                f.field("zone", &zone.name());
            }
        };
        match self {
            WindowKind::Tumble { size, offset, zone } => {
                let mut out = f.debug_struct("Tumble");
                out.field("size", size).field("offset", offset);
                with_zone(&mut out, zone);
                out.finish()
            }
            WindowKind::Hop {
                slide,
                size,
                offset,
                zone,
            } => {
                let mut out = f.debug_struct("Hop");
                out.field("slide", slide)
                    .field("size", size)
                    .field("offset", offset);
                with_zone(&mut out, zone);
                out.finish()
            }
            WindowKind::Session { gap } => f.debug_struct("Session").field("gap", gap).finish(),
        }
    }
}

impl WindowKind {
    /// The windows' length on the clock they are laid out on: in a time zone a window across a
    /// clock change is that much shorter or longer in real time.
    pub fn size(&self) -> i64 {
        match self {
            WindowKind::Tumble { size, .. } | WindowKind::Hop { size, .. } => *size,
            WindowKind::Session { gap } => *gap,
        }
    }

    /// Start and end of every window containing `event_time`, earliest first.
    pub fn windows(self, event_time: i64) -> Windows {
        self.assigner().windows(event_time)
    }

    /// Finds rows' windows one after another (remembering, in a time zone, the last answer).
    pub fn assigner(self) -> WindowAssigner {
        let zoned = match self {
            WindowKind::Tumble {
                size,
                offset,
                zone: Some(zone),
            } => Some(Zoned {
                zone,
                slide: size,
                size,
                offset,
            }),
            WindowKind::Hop {
                slide,
                size,
                offset,
                zone: Some(zone),
            } => Some(Zoned {
                zone,
                slide,
                size,
                offset,
            }),
            _ => None,
        };
        WindowAssigner {
            kind: self,
            zoned,
            last: None,
        }
    }

    /// The end of the window that starts at `start` (one of [`WindowKind::windows`]'s starts).
    pub fn end_of(self, start: i64) -> i64 {
        match self.assigner().zoned {
            Some(zoned) => zoned.end_of(start),
            None => start.saturating_add(self.size()),
        }
    }
}

/// Finds the windows of event times. On the UTC grid that is arithmetic; on a local clock it
/// takes a few time-zone lookups, so the assigner keeps the last answer and the span of event
/// times it holds for (rows come in bursts of nearby times: a day's window is looked up once a
/// day, not once a row).
pub struct WindowAssigner {
    kind: WindowKind,
    zoned: Option<Zoned>,
    last: Option<Remembered>,
}

/// The windows of every event time in `[from, until)`.
struct Remembered {
    from: i64,
    until: i64,
    windows: Rc<[(i64, i64)]>,
}

impl WindowAssigner {
    /// Start and end of every window containing `event_time`, earliest first.
    pub fn windows(&mut self, event_time: i64) -> Windows {
        let Some(zoned) = &self.zoned else {
            return self.on_the_grid(event_time);
        };
        let remembered = match self.last.take() {
            Some(last) if last.from <= event_time && event_time < last.until => last,
            _ => zoned.containing(event_time),
        };
        let windows = Windows::Listed {
            windows: remembered.windows.clone(),
            next: 0,
        };
        self.last = Some(remembered);
        windows
    }

    fn on_the_grid(&self, event_time: i64) -> Windows {
        let (first_start, last_start, slide, size) = match self.kind {
            WindowKind::Tumble { size, offset, .. } => {
                let start = (event_time - offset).div_euclid(size) * size + offset;
                (start, start, size, size)
            }
            WindowKind::Hop {
                slide,
                size,
                offset,
                ..
            } => {
                let last = (event_time - offset).div_euclid(slide) * slide + offset;
                (
                    last - (size - 1).div_euclid(slide) * slide,
                    last,
                    slide,
                    size,
                )
            }
            WindowKind::Session { gap } => (event_time, event_time, gap, gap),
        };
        Windows::Grid {
            next_start: first_start,
            last_start,
            slide,
            size,
            event_time,
        }
    }
}

/// The windows containing one event time: `(start, end)` pairs, earliest first.
pub enum Windows {
    /// On the UTC grid, every window is `size` long and starts on a grid of `slide`.
    Grid {
        next_start: i64,
        last_start: i64,
        slide: i64,
        size: i64,
        event_time: i64,
    },
    Listed {
        windows: Rc<[(i64, i64)]>,
        next: usize,
    },
}

impl Iterator for Windows {
    type Item = (i64, i64);

    fn next(&mut self) -> Option<(i64, i64)> {
        match self {
            Windows::Grid {
                next_start,
                last_start,
                slide,
                size,
                event_time,
            } => loop {
                let start = *next_start;
                if start > *last_start {
                    return None;
                }
                *next_start += *slide;
                if *event_time < start + *size {
                    return Some((start, start + *size));
                }
            },
            Windows::Listed { windows, next } => {
                let window = windows.get(*next).copied();
                *next += 1;
                window
            }
        }
    }
}

/// Windows laid out on a local clock (`local_time.rs`): starts every `slide` from `offset` on
/// that clock, each `size` long on it, bounded by the instants those local times name.
struct Zoned {
    zone: TimeZone,
    slide: i64,
    size: i64,
    offset: i64,
}

impl Zoned {
    fn instant(&self, local: i64) -> i64 {
        self.zone.instant(local)
    }

    /// The last local start, on the grid, whose instant is not after `instant`. Instants grow
    /// with local times, so it is near the local reading of `instant` and found by stepping.
    fn last_start_at_or_before(&self, instant: i64) -> i64 {
        let local = self.zone.local(instant);
        let mut start = (local - self.offset).div_euclid(self.slide) * self.slide + self.offset;
        while self.instant(start) > instant {
            start -= self.slide;
        }
        while self.instant(start + self.slide) <= instant {
            start += self.slide;
        }
        start
    }

    /// The windows containing `event_time`, and the span of event times in the same windows:
    /// from the last start or end at or before it to the first after it.
    fn containing(&self, event_time: i64) -> Remembered {
        let last_start = self.last_start_at_or_before(event_time);
        let mut windows = Vec::with_capacity(1);
        let mut start = last_start;
        let mut until = self.instant(last_start + self.slide);
        let from = loop {
            let end = self.instant(start + self.size);
            if end <= event_time {
                break end.max(self.instant(last_start));
            }
            until = until.min(end);
            windows.push((self.instant(start), end));
            start -= self.slide;
        };
        windows.reverse();
        Remembered {
            from,
            until,
            windows: windows.into(),
        }
    }

    fn end_of(&self, start: i64) -> i64 {
        self.instant(self.last_start_at_or_before(start) + self.size)
    }
}

/// Appends `window_start` and `window_end` columns to each row, once per window it falls in.
///
/// ```
/// use timely::dataflow::operators::{Capture, ToStream, capture::Extract};
/// use vibelux_operators::row::Datum;
/// use vibelux_operators::window::{AssignWindowsExt, WindowKind};
///
/// let captured = timely::example(|scope| {
///     vec![vec![Datum::Timestamp(90)]]
///         .to_stream(scope)
///         .container::<Vec<_>>()
///         .assign_windows(0, WindowKind::Tumble { size: 60, offset: 0, zone: None })
///         .capture()
/// });
/// let rows: Vec<_> = captured.extract().into_iter().flat_map(|(_, rows)| rows).collect();
/// assert_eq!(rows, vec![vec![Datum::Timestamp(90), Datum::Timestamp(60), Datum::Timestamp(120)]]);
/// ```
pub trait AssignWindowsExt<'scope> {
    fn assign_windows(self, time_column: usize, kind: WindowKind) -> Stream<'scope, u64, Vec<Row>>;
}

/// The copies of `row` tagged with each window it falls in (none without an event time: sources
/// reject such rows, so a null here comes from a computed column).
fn tagged<'a>(
    row: &'a Row,
    time_column: usize,
    assigner: &mut WindowAssigner,
) -> impl Iterator<Item = Row> + 'a {
    let windows = row[time_column]
        .as_timestamp_nanos()
        .map(|event_time| assigner.windows(event_time));
    windows.into_iter().flatten().map(move |(start, end)| {
        let mut tagged = Vec::with_capacity(row.len() + 2);
        tagged.extend_from_slice(row);
        tagged.push(Datum::Timestamp(start));
        tagged.push(Datum::Timestamp(end));
        tagged
    })
}

impl<'scope> AssignWindowsExt<'scope> for Stream<'scope, u64, Vec<Row>> {
    fn assign_windows(self, time_column: usize, kind: WindowKind) -> Stream<'scope, u64, Vec<Row>> {
        self.unary(Pipeline, "AssignWindows", move |_, _| {
            let mut assigner = kind.assigner();
            move |input, output| {
                input.for_each(|time, data| {
                    let mut out: Vec<Row> = Vec::with_capacity(data.len());
                    for row in data.iter() {
                        out.extend(tagged(row, time_column, &mut assigner));
                    }
                    output.session(&time).give_container(&mut out);
                });
            }
        })
    }
}

/// Window assignment fused with the projection after it: each output row holds only `picks` of
/// the tagged row (a pick equal to the input width is `window_start`, one more is `window_end`),
/// so the wide tagged row is never built. This is how a `GROUP BY` over a window reads its input.
pub trait AssignWindowsPickExt<'scope> {
    fn assign_windows_picking(
        self,
        time_column: usize,
        kind: WindowKind,
        picks: Vec<usize>,
    ) -> Stream<'scope, u64, Vec<Row>>;
}

impl<'scope> AssignWindowsPickExt<'scope> for Stream<'scope, u64, Vec<Row>> {
    fn assign_windows_picking(
        self,
        time_column: usize,
        kind: WindowKind,
        picks: Vec<usize>,
    ) -> Stream<'scope, u64, Vec<Row>> {
        self.unary(Pipeline, "AssignWindowsPicking", move |_, _| {
            let mut assigner = kind.assigner();
            move |input, output| {
                input.for_each(|time, data| {
                    let mut out = Vec::with_capacity(data.len());
                    for row in data.iter() {
                        let Some(event_time) = row[time_column].as_timestamp_nanos() else {
                            continue;
                        };
                        let width = row.len();
                        for (start, end) in assigner.windows(event_time) {
                            let picked: Row = picks
                                .iter()
                                .map(|&column| match column {
                                    c if c < width => row[c].clone(),
                                    c if c == width => Datum::Timestamp(start),
                                    _ => Datum::Timestamp(end),
                                })
                                .collect();
                            out.push(picked);
                        }
                    }
                    output.session(&time).give_container(&mut out);
                });
            }
        })
    }
}

/// Window assignment for an updating relation (a join with a table): each update is tagged, its
/// diff kept, so a retraction retracts from the same windows.
pub trait AssignWindowsUpdatesExt<'scope> {
    fn assign_windows_to_updates(
        self,
        time_column: usize,
        kind: WindowKind,
    ) -> Stream<'scope, u64, Vec<Update>>;
}

impl<'scope> AssignWindowsUpdatesExt<'scope> for Stream<'scope, u64, Vec<Update>> {
    fn assign_windows_to_updates(
        self,
        time_column: usize,
        kind: WindowKind,
    ) -> Stream<'scope, u64, Vec<Update>> {
        self.unary(Pipeline, "AssignWindowsToUpdates", move |_, _| {
            let mut assigner = kind.assigner();
            move |input, output| {
                input.for_each(|time, data| {
                    let mut out: Vec<Update> = Vec::with_capacity(data.len());
                    for (row, at, diff) in data.iter() {
                        out.extend(
                            tagged(row, time_column, &mut assigner).map(|row| (row, *at, *diff)),
                        );
                    }
                    output.session(&time).give_container(&mut out);
                });
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts(kind: WindowKind, event_time: i64) -> Vec<i64> {
        kind.windows(event_time).map(|(start, _)| start).collect()
    }

    fn at(text: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    }

    const HOUR: i64 = 3_600_000_000_000;

    #[test]
    fn days_in_a_time_zone_start_at_local_midnight_and_last_23_or_25_hours_at_a_clock_change() {
        let amsterdam = Some("Europe/Amsterdam".parse().unwrap());
        let day = WindowKind::Tumble {
            size: 24 * HOUR,
            offset: 0,
            zone: amsterdam,
        };
        let windows = |text: &str| day.windows(at(text)).collect::<Vec<_>>();
        assert_eq!(
            windows("2026-03-29T12:00:00+02:00"),
            [(
                at("2026-03-29T00:00:00+01:00"),
                at("2026-03-30T00:00:00+02:00")
            )]
        );
        assert_eq!(
            at("2026-03-30T00:00:00+02:00") - at("2026-03-29T00:00:00+01:00"),
            23 * HOUR
        );
        assert_eq!(
            windows("2026-10-25T23:59:59+01:00"),
            [(
                at("2026-10-25T00:00:00+02:00"),
                at("2026-10-26T00:00:00+01:00")
            )]
        );
        assert_eq!(
            at("2026-10-26T00:00:00+01:00") - at("2026-10-25T00:00:00+02:00"),
            25 * HOUR
        );
        // Local midnight is a boundary both ways.
        assert_eq!(
            windows("2026-10-26T00:00:00+01:00")[0].0,
            at("2026-10-26T00:00:00+01:00")
        );
        assert_eq!(
            windows("2026-10-25T23:59:59.999999999+01:00")[0].1,
            at("2026-10-26T00:00:00+01:00")
        );
        for (start, end) in [
            windows("2026-03-29T12:00:00+02:00")[0],
            windows("2026-10-25T12:00:00+01:00")[0],
        ] {
            assert_eq!(day.end_of(start), end);
        }
        // A grower's day from 06:00 local: the offset moves the local grid.
        let from_six = WindowKind::Tumble {
            size: 24 * HOUR,
            offset: 6 * HOUR,
            zone: amsterdam,
        };
        assert_eq!(
            from_six.windows(at("2026-03-29T05:00:00+02:00")).next(),
            Some((
                at("2026-03-28T06:00:00+01:00"),
                at("2026-03-29T06:00:00+02:00")
            ))
        );
    }

    #[test]
    fn hours_across_a_clock_change_are_skipped_or_doubled_as_the_local_clock_says() {
        let amsterdam = Some("Europe/Amsterdam".parse().unwrap());
        let hour = WindowKind::Tumble {
            size: HOUR,
            offset: 0,
            zone: amsterdam,
        };
        // Spring: 01:00–02:00 local is followed by 03:00–04:00; 02:00 never happens.
        assert_eq!(
            hour.windows(at("2026-03-29T01:59:59+01:00"))
                .collect::<Vec<_>>(),
            [(
                at("2026-03-29T01:00:00+01:00"),
                at("2026-03-29T03:00:00+02:00")
            )]
        );
        assert_eq!(
            hour.windows(at("2026-03-29T03:00:00+02:00"))
                .collect::<Vec<_>>(),
            [(
                at("2026-03-29T03:00:00+02:00"),
                at("2026-03-29T04:00:00+02:00")
            )]
        );
        // Autumn: 02:00–03:00 local happens twice; the window holds both passes.
        let repeated = (
            at("2026-10-25T02:00:00+02:00"),
            at("2026-10-25T03:00:00+01:00"),
        );
        for text in ["2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00"] {
            assert_eq!(hour.windows(at(text)).collect::<Vec<_>>(), [repeated]);
        }
        assert_eq!(hour.end_of(repeated.0), repeated.1);
        // Hopping hours every half hour: each instant is in two windows, in order.
        let hop = WindowKind::Hop {
            slide: HOUR / 2,
            size: HOUR,
            offset: 0,
            zone: amsterdam,
        };
        let around = hop
            .windows(at("2026-10-25T02:45:00+01:00"))
            .collect::<Vec<_>>();
        assert_eq!(
            around,
            [
                (
                    at("2026-10-25T02:00:00+02:00"),
                    at("2026-10-25T03:00:00+01:00")
                ),
                (
                    at("2026-10-25T02:30:00+02:00"),
                    at("2026-10-25T03:30:00+01:00")
                ),
            ]
        );
    }

    #[test]
    fn an_assigner_remembering_its_last_windows_answers_as_a_fresh_lookup() {
        let zone = Some("Europe/Amsterdam".parse().unwrap());
        for kind in [
            WindowKind::Tumble {
                size: 24 * HOUR,
                offset: 6 * HOUR,
                zone,
            },
            WindowKind::Hop {
                slide: HOUR,
                size: 3 * HOUR,
                offset: 0,
                zone,
            },
            WindowKind::Hop {
                slide: 2 * HOUR,
                size: HOUR / 2,
                offset: 0,
                zone,
            },
        ] {
            let mut assigner = kind.assigner();
            // Forward, then back and forth, across both clock changes of 2026.
            let mut times: Vec<i64> = (0..2_000)
                .map(|step| at("2026-03-27T00:00:00Z") + step * 7 * 60_000_000_000)
                .collect();
            times.extend(
                (0..2_000).map(|step| at("2026-10-23T00:00:00Z") + step * 7 * 60_000_000_000),
            );
            times.extend(times.clone().iter().rev().step_by(3));
            for time in times {
                let remembered: Vec<_> = assigner.windows(time).collect();
                let fresh: Vec<_> = kind.windows(time).collect();
                assert_eq!(remembered, fresh, "{kind:?} at {time}");
            }
        }
    }

    #[test]
    fn every_instant_of_a_year_falls_in_one_local_day_that_holds_it() {
        let day = WindowKind::Tumble {
            size: 24 * HOUR,
            offset: 0,
            zone: Some("America/Santiago".parse().unwrap()),
        };
        let mut instant = at("2025-01-01T00:00:00Z");
        let mut previous: Option<(i64, i64)> = None;
        while instant < at("2026-01-01T00:00:00Z") {
            let windows: Vec<_> = day.windows(instant).collect();
            assert_eq!(windows.len(), 1, "{instant}");
            let (start, end) = windows[0];
            assert!(start <= instant && instant < end, "{instant}");
            assert!([23, 24, 25].contains(&((end - start) / HOUR)), "{instant}");
            assert_eq!(day.end_of(start), end);
            if let Some(before) = previous.filter(|before| *before != windows[0]) {
                assert_eq!(before.1, start, "days follow each other");
            }
            previous = Some(windows[0]);
            instant += HOUR / 4;
        }
    }

    #[test]
    fn a_tumbling_window_holds_its_start_but_not_its_end() {
        let kind = WindowKind::Tumble {
            size: 60,
            offset: 0,
            zone: None,
        };
        assert_eq!(starts(kind, 60), vec![60]);
        assert_eq!(starts(kind, 119), vec![60]);
        assert_eq!(starts(kind, -1), vec![-60]);
    }

    #[test]
    fn an_offset_moves_every_window_by_the_same_amount() {
        // Days of 100 starting at 30: [−70, 30), [30, 130), …
        let kind = WindowKind::Tumble {
            size: 100,
            offset: 30,
            zone: None,
        };
        assert_eq!(starts(kind, 29), vec![-70]);
        assert_eq!(starts(kind, 30), vec![30]);
        assert_eq!(starts(kind, 129), vec![30]);
        let kind = WindowKind::Hop {
            slide: 20,
            size: 60,
            offset: 5,
            zone: None,
        };
        assert_eq!(starts(kind, 65), vec![25, 45, 65]);
        assert_eq!(starts(kind, 64), vec![5, 25, 45]);
    }

    #[test]
    fn a_hopping_window_tags_a_row_once_per_overlapping_window() {
        let kind = WindowKind::Hop {
            slide: 20,
            size: 60,
            offset: 0,
            zone: None,
        };
        assert_eq!(starts(kind, 65), vec![20, 40, 60]);
        assert_eq!(starts(kind, 60), vec![20, 40, 60]);
    }

    #[test]
    fn picking_after_assignment_equals_assigning_then_picking() {
        use timely::dataflow::operators::{Capture, ToStream, capture::Extract};
        let row = vec![
            Datum::Utf8("s1".into()),
            Datum::Timestamp(90),
            Datum::Float64(1.5),
        ];
        let picks = vec![0, 3, 4, 2];
        let (fused, separate) = timely::example(move |scope| {
            let rows = vec![row].to_stream(scope).container::<Vec<_>>();
            let kind = WindowKind::Hop {
                slide: 30,
                size: 60,
                offset: 0,
                zone: None,
            };
            let fused = rows
                .clone()
                .assign_windows_picking(1, kind, picks.clone())
                .capture();
            let separate = rows.assign_windows(1, kind).capture();
            (fused, separate)
        });
        let fused: Vec<Row> = fused
            .extract()
            .into_iter()
            .flat_map(|(_, rows)| rows)
            .collect();
        let separate: Vec<Row> = separate
            .extract()
            .into_iter()
            .flat_map(|(_, rows)| rows)
            .map(|row| [0, 3, 4, 2].iter().map(|&c| row[c].clone()).collect())
            .collect();
        assert_eq!(fused.len(), 2);
        assert_eq!(fused, separate);
    }

    #[test]
    fn a_row_opens_a_session_of_one_gap() {
        let kind = WindowKind::Session { gap: 30 };
        assert_eq!(starts(kind, 65), vec![65]);
        assert_eq!(kind.size(), 30);
    }

    #[test]
    fn a_hop_with_gaps_skips_rows_between_windows() {
        let kind = WindowKind::Hop {
            slide: 60,
            size: 20,
            offset: 0,
            zone: None,
        };
        assert_eq!(starts(kind, 10), vec![0]);
        assert!(starts(kind, 30).is_empty());
    }
}
