//! Session windows: the index of open sessions per key, and how a new row merges them.
//!
//! A row opens a proto-session `[ts, ts + gap)` (window assignment, `window.rs`). Sessions of the
//! same key that overlap it are one session: the aggregate replaces them by their union and folds
//! their accumulators together. This module only decides which sessions merge; the aggregate
//! moves the state.

use serde::{Deserialize, Serialize};
use vibelux_interfaces::checkpoint::serialize_in_key_order;

use crate::aggregate::StateMap;
use crate::row::{Datum, Row};

/// Where the session bounds sit among an aggregate's key columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionColumns {
    pub start: usize,
    pub end: usize,
}

/// What a row's proto-session does to the open sessions of its key.
#[derive(Debug, PartialEq, Eq)]
pub struct SessionMerge {
    /// The key (with session bounds) the row belongs to now.
    pub merged_key: Row,
    /// Keys of sessions folded into `merged_key` (empty when the row fell inside one session).
    pub absorbed: Vec<Row>,
}

/// Open sessions by the key without its bounds.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct SessionIndex {
    #[serde(serialize_with = "serialize_in_key_order")]
    sessions: StateMap<Row, Vec<(i64, i64)>>,
}

impl SessionIndex {
    /// The sessions of the keys (without bounds) that `ours` accepts.
    pub fn routed(self, ours: impl Fn(&[Datum]) -> bool) -> Self {
        let mut sessions = self.sessions;
        sessions.retain(|key, _| ours(key));
        SessionIndex { sessions }
    }

    /// Adds the sessions of other keys (restored from another worker's part).
    pub fn extend(&mut self, other: SessionIndex) {
        self.sessions.extend(other.sessions);
    }

    fn split(columns: SessionColumns, key: &[Datum]) -> Option<(Row, i64, i64)> {
        let start = key[columns.start].as_timestamp_nanos()?;
        let end = key[columns.end].as_timestamp_nanos()?;
        let rest = key
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != columns.start && *i != columns.end)
            .map(|(_, d)| d.clone())
            .collect();
        Some((rest, start, end))
    }

    fn with_bounds(columns: SessionColumns, key: &[Datum], start: i64, end: i64) -> Row {
        let mut key = key.to_vec();
        key[columns.start] = Datum::Timestamp(start);
        key[columns.end] = Datum::Timestamp(end);
        key
    }

    /// Records the proto-session in `key`; says how it merges, or `None` when it is a new session.
    pub fn merge(&mut self, columns: SessionColumns, key: &[Datum]) -> Option<SessionMerge> {
        let (rest, start, end) = Self::split(columns, key)?;
        let open = self.sessions.entry(rest).or_default();
        let overlapping: Vec<usize> = (0..open.len())
            .filter(|&i| open[i].0 < end && start < open[i].1)
            .collect();
        if let [only] = overlapping[..]
            && open[only].0 <= start
            && end <= open[only].1
        {
            let (a, b) = open[only];
            return Some(SessionMerge {
                merged_key: Self::with_bounds(columns, key, a, b),
                absorbed: Vec::new(),
            });
        }
        // Sessions are disjoint, so one pass finds every session the union touches.
        let (mut low, mut high) = (start, end);
        let mut absorbed = Vec::new();
        for &i in overlapping.iter().rev() {
            let (a, b) = open.swap_remove(i);
            low = low.min(a);
            high = high.max(b);
            absorbed.push(Self::with_bounds(columns, key, a, b));
        }
        open.push((low, high));
        if absorbed.is_empty() {
            return None;
        }
        Some(SessionMerge {
            merged_key: Self::with_bounds(columns, key, low, high),
            absorbed,
        })
    }

    /// Forgets a session that closed.
    pub fn forget(&mut self, columns: SessionColumns, key: &[Datum]) {
        let Some((rest, start, end)) = Self::split(columns, key) else {
            return;
        };
        if let Some(open) = self.sessions.get_mut(&rest) {
            open.retain(|&(a, b)| (a, b) != (start, end));
            if open.is_empty() {
                self.sessions.remove(&rest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: SessionColumns = SessionColumns { start: 1, end: 2 };

    fn key(start: i64, end: i64) -> Row {
        vec![
            Datum::Utf8("s1".into()),
            Datum::Timestamp(start),
            Datum::Timestamp(end),
        ]
    }

    #[test]
    fn rows_within_a_gap_of_each_other_share_a_session() {
        let mut index = SessionIndex::default();
        assert_eq!(index.merge(COLUMNS, &key(0, 10)), None);
        assert_eq!(index.merge(COLUMNS, &key(30, 40)), None);
        // Inside the first session: it joins it as is.
        assert_eq!(
            index.merge(COLUMNS, &key(2, 10)),
            Some(SessionMerge {
                merged_key: key(0, 10),
                absorbed: vec![]
            })
        );
        // Bridging both sessions: one session from 0 to 40.
        let bridge = index.merge(COLUMNS, &key(8, 32)).unwrap();
        assert_eq!(bridge.merged_key, key(0, 40));
        assert_eq!(bridge.absorbed.len(), 2);
    }

    #[test]
    fn a_forgotten_session_no_longer_merges() {
        let mut index = SessionIndex::default();
        index.merge(COLUMNS, &key(0, 10));
        index.forget(COLUMNS, &key(0, 10));
        assert_eq!(index.merge(COLUMNS, &key(5, 15)), None);
    }
}
