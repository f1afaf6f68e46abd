//! Window assignment: `TUMBLE` and `HOP` as operators that tag rows with their windows.
//!
//! A window table function adds `window_start` and `window_end` to every row of its input, one
//! output row per window the row falls in (one for a tumbling window, `size / slide` for a hopping
//! one). Assignment reads only the row's event time, so it is stateless and deterministic; when a
//! window is complete is decided downstream, by the aggregate that groups on it (see
//! `aggregate.rs`).

use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::row::{Datum, Row, Update};

/// Which windows a row belongs to. Sizes are in nanoseconds, like event times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowKind {
    /// Windows start at `offset` past each multiple of `size` since the Unix epoch (UTC): a
    /// day starting at 06:00 UTC is `size` one day, `offset` six hours.
    Tumble {
        size: i64,
        #[serde(default)]
        offset: i64,
    },
    Hop {
        slide: i64,
        size: i64,
        #[serde(default)]
        offset: i64,
    },
    /// Each row starts a proto-session `[ts, ts + gap)`; the aggregate grouping on it merges
    /// overlapping sessions of the same key (see `aggregate.rs`).
    Session { gap: i64 },
}

impl WindowKind {
    pub fn size(&self) -> i64 {
        match self {
            WindowKind::Tumble { size, .. } | WindowKind::Hop { size, .. } => *size,
            WindowKind::Session { gap } => *gap,
        }
    }

    /// Start times of every window containing `event_time`, earliest first.
    pub fn window_starts(self, event_time: i64) -> impl Iterator<Item = i64> {
        let (first_start, last_start, slide, size) = match self {
            WindowKind::Tumble { size, offset } => {
                let start = (event_time - offset).div_euclid(size) * size + offset;
                (start, start, size, size)
            }
            WindowKind::Hop {
                slide,
                size,
                offset,
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
        (0..)
            .map(move |step| first_start + step * slide)
            .take_while(move |start| *start <= last_start)
            .filter(move |start| event_time < start + size)
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
///         .assign_windows(0, WindowKind::Tumble { size: 60, offset: 0 })
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
fn tagged(row: &Row, time_column: usize, kind: WindowKind) -> impl Iterator<Item = Row> + '_ {
    let event_time = row[time_column].as_timestamp_nanos();
    event_time
        .into_iter()
        .flat_map(move |event_time| kind.window_starts(event_time))
        .map(move |start| {
            let mut tagged = Vec::with_capacity(row.len() + 2);
            tagged.extend_from_slice(row);
            tagged.push(Datum::Timestamp(start));
            tagged.push(Datum::Timestamp(start + kind.size()));
            tagged
        })
}

impl<'scope> AssignWindowsExt<'scope> for Stream<'scope, u64, Vec<Row>> {
    fn assign_windows(self, time_column: usize, kind: WindowKind) -> Stream<'scope, u64, Vec<Row>> {
        self.unary(Pipeline, "AssignWindows", move |_, _| {
            move |input, output| {
                input.for_each(|time, data| {
                    let mut out: Vec<Row> = data
                        .iter()
                        .flat_map(|row| tagged(row, time_column, kind))
                        .collect();
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
            move |input, output| {
                input.for_each(|time, data| {
                    let mut out = Vec::with_capacity(data.len());
                    for row in data.iter() {
                        let Some(event_time) = row[time_column].as_timestamp_nanos() else {
                            continue;
                        };
                        let width = row.len();
                        for start in kind.window_starts(event_time) {
                            let picked: Row = picks
                                .iter()
                                .map(|&column| match column {
                                    c if c < width => row[c].clone(),
                                    c if c == width => Datum::Timestamp(start),
                                    _ => Datum::Timestamp(start + kind.size()),
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
            move |input, output| {
                input.for_each(|time, data| {
                    let mut out: Vec<Update> = data
                        .iter()
                        .flat_map(|(row, at, diff)| {
                            tagged(row, time_column, kind).map(move |row| (row, *at, *diff))
                        })
                        .collect();
                    output.session(&time).give_container(&mut out);
                });
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tumbling_window_holds_its_start_but_not_its_end() {
        let kind = WindowKind::Tumble {
            size: 60,
            offset: 0,
        };
        assert_eq!(kind.window_starts(60).collect::<Vec<_>>(), vec![60]);
        assert_eq!(kind.window_starts(119).collect::<Vec<_>>(), vec![60]);
        assert_eq!(kind.window_starts(-1).collect::<Vec<_>>(), vec![-60]);
    }

    #[test]
    fn an_offset_moves_every_window_by_the_same_amount() {
        // Days of 100 starting at 30: [−70, 30), [30, 130), …
        let kind = WindowKind::Tumble {
            size: 100,
            offset: 30,
        };
        assert_eq!(kind.window_starts(29).collect::<Vec<_>>(), vec![-70]);
        assert_eq!(kind.window_starts(30).collect::<Vec<_>>(), vec![30]);
        assert_eq!(kind.window_starts(129).collect::<Vec<_>>(), vec![30]);
        let kind = WindowKind::Hop {
            slide: 20,
            size: 60,
            offset: 5,
        };
        assert_eq!(kind.window_starts(65).collect::<Vec<_>>(), vec![25, 45, 65]);
        assert_eq!(kind.window_starts(64).collect::<Vec<_>>(), vec![5, 25, 45]);
    }

    #[test]
    fn a_hopping_window_tags_a_row_once_per_overlapping_window() {
        let kind = WindowKind::Hop {
            slide: 20,
            size: 60,
            offset: 0,
        };
        assert_eq!(kind.window_starts(65).collect::<Vec<_>>(), vec![20, 40, 60]);
        assert_eq!(kind.window_starts(60).collect::<Vec<_>>(), vec![20, 40, 60]);
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
        assert_eq!(kind.window_starts(65).collect::<Vec<_>>(), vec![65]);
        assert_eq!(kind.size(), 30);
    }

    #[test]
    fn a_hop_with_gaps_skips_rows_between_windows() {
        let kind = WindowKind::Hop {
            slide: 60,
            size: 20,
            offset: 0,
        };
        assert_eq!(kind.window_starts(10).collect::<Vec<_>>(), vec![0]);
        assert!(kind.window_starts(30).next().is_none());
    }
}
