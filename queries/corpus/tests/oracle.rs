//! The randomized oracle: for generated inputs and queries, a streaming view's final contents
//! equal DuckDB's answer over the final inputs.
//!
//! Each seed generates a stream (readings out of order within the watermark, repeated, with
//! NULLs) and a table read from a change log (`_op`: rows replaced by later ones for the same
//! key, and deletions, some naming a row no longer held), then a query per
//! template with constants drawn from the seed: aggregates with filters, inner, outer and full
//! joins with the table, tumbling windows (against DuckDB's `time_bucket`), `IN`, `EXISTS`,
//! `NOT EXISTS`, `NOT IN` with NULLs in the list, outer, semi and anti joins with conditions
//! beside the equality, `INTERSECT`, `EXCEPT`, `UNION ALL`, TOP-N,
//! `ORDER BY … LIMIT`, `ROLLUP`, `CUBE`, `DISTINCT`, `count`, `sum` and `avg` of `DISTINCT`
//! values, `FILTER`, `median`,
//! string and arithmetic functions, scalar subqueries (correlated or not), as-of joins to a versioned table (against DuckDB's `ASOF
//! JOIN`); and over a second stream whose readings of a key never
//! share an instant (so that order within a key has one answer), `LAG`, `LEAD`, `ROW_NUMBER` and
//! running aggregates over ROWS and RANGE frames, frames reaching rows or time ahead; interval
//! joins of the streams (inner, LEFT, RIGHT, FULL, `EXISTS`, `NOT EXISTS`). The engine runs each
//! query to completion with two workers; DuckDB (Python's `duckdb`, which the test script
//! installs) runs it over the stream as written and the rows the table's log leaves. Rows are
//! compared as multisets, numbers to 9 significant digits. A seed that once found a difference
//! stays in `SEEDS` with what it found.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use vibelux::pipeline::query_to_completion;
use vibelux_interfaces::row::Datum;
use vibelux_queries::parser::parse_pipeline;
use vibelux_queries::planner::{Outcome, Planner};

/// The seeds run every time (a seed that found a difference stays here). Seed 1 found that
/// `coalesce` failed every row of a view (DataFusion runs it only once its simplifier has
/// rewritten it, and views did not run the simplifier).
const SEEDS: std::ops::RangeInclusive<u64> = 1..=30;

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn between(&mut self, low: i64, high: i64) -> i64 {
        low + self.below((high - low + 1) as u64) as i64
    }
}

/// Writes `s.jsonl` (the stream), `t.csv` (the table as the engine reads it, with updates) and
/// `t_final.csv` (its last row per key, for DuckDB).
fn write_inputs(dir: &Path, random: &mut Lcg) {
    let mut stream = String::new();
    let start = 1_780_000_000i64;
    for i in 0..240 {
        let key = match random.below(20) {
            0 => "null".to_string(),
            _ => format!("\"k{}\"", random.below(8)),
        };
        let group = format!("g{}", random.below(3));
        let x = match random.below(20) {
            0 => "null".to_string(),
            _ => random.between(-30, 30).to_string(),
        };
        // Out of order by up to 3 s; the watermark waits 10 s, so nothing is late.
        let second = start + i + random.between(-3, 3);
        let ts = chrono::DateTime::from_timestamp(second, 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ");
        let line = format!("{{\"k\": {key}, \"g\": \"{group}\", \"x\": {x}, \"ts\": \"{ts}\"}}\n");
        stream.push_str(&line);
        if random.below(10) == 0 {
            stream.push_str(&line);
        }
    }
    std::fs::write(dir.join("s.jsonl"), stream).unwrap();
    // The table is a change log, as a sink writes a view's changes: upserts (`insert`, or no
    // `_op`), and deletions that take back the row they name — only if it is the row held (a
    // stale one, naming a value replaced since, changes nothing).
    let mut table = String::from("_op,k,v\n");
    let mut last = std::collections::BTreeMap::new();
    for round in 0..3 {
        for key in 0..10 {
            if round > 0 && random.below(3) != 0 {
                continue;
            }
            let v = match random.below(8) {
                0 => String::new(),
                _ => random.between(-20, 20).to_string(),
            };
            if round == 2 {
                // Take back the row held, or one held before, or a row never held.
                let named = match random.below(3) {
                    0 => last.get(&key).cloned().unwrap_or_default(),
                    _ => v,
                };
                writeln!(table, "delete,k{key},{named}").unwrap();
                if last.get(&key) == Some(&named) {
                    last.remove(&key);
                }
                continue;
            }
            let op = if random.below(2) == 0 { "insert" } else { "" };
            writeln!(table, "{op},k{key},{v}").unwrap();
            last.insert(key, v);
        }
    }
    std::fs::write(dir.join("t.csv"), table).unwrap();
    let mut last_rows = String::from("k,v\n");
    for (key, v) in last {
        writeln!(last_rows, "k{key},{v}").unwrap();
    }
    std::fs::write(dir.join("t_final.csv"), last_rows).unwrap();
    // A second stream whose readings of one key never share an instant (window functions in
    // event-time order then have one answer), written out of order by up to 4 lines.
    let mut lines: Vec<String> = (0..180)
        .map(|i| {
            let x = match random.below(15) {
                0 => "null".to_string(),
                _ => random.between(-30, 30).to_string(),
            };
            let ts = chrono::DateTime::from_timestamp(start + i, 0)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%SZ");
            format!("{{\"k\": \"k{}\", \"x\": {x}, \"ts\": \"{ts}\"}}\n", i % 5)
        })
        .collect();
    // Each line moves back by at most 4 places (4 s), well within the watermark's 10 s.
    let mut keyed: Vec<(u64, String)> = lines
        .drain(..)
        .enumerate()
        .map(|(i, line)| (i as u64 + random.below(5), line))
        .collect();
    keyed.sort_by_key(|(key, _)| *key);
    let lines: Vec<String> = keyed.into_iter().map(|(_, line)| line).collect();
    std::fs::write(dir.join("u.jsonl"), lines.concat()).unwrap();
    // A versioned table: values of k0..k6 (k7 never has one) from instants across the stream's
    // time, no two of a key at one instant, written out of order by up to 5 s.
    let mut versions: Vec<(i64, String)> = (-20..260)
        .filter_map(|second| {
            if random.below(6) != 0 {
                return None;
            }
            let v = match random.below(10) {
                0 => "null".to_string(),
                _ => random.between(-20, 20).to_string(),
            };
            let valid_from = chrono::DateTime::from_timestamp(start + second, 0)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%SZ");
            let line = format!(
                "{{\"k\": \"k{}\", \"valid_from\": \"{valid_from}\", \"v\": {v}}}\n",
                random.below(7)
            );
            Some((second + random.between(0, 5), line))
        })
        .collect();
    versions.sort_by_key(|(order, _)| *order);
    let versions: Vec<String> = versions.into_iter().map(|(_, line)| line).collect();
    std::fs::write(dir.join("h.jsonl"), versions.concat()).unwrap();
}

/// One query per template, with constants from `random`.
fn queries(random: &mut Lcg) -> Vec<String> {
    let c = random.between(-15, 15);
    let d = random.between(-15, 15);
    let n = random.between(1, 3);
    let limit = random.between(1, 6);
    vec![
        format!(
            "SELECT g, count(*), count(x), sum(x), min(x), max(x) FROM s WHERE x > {c} GROUP BY g"
        ),
        "SELECT k, avg(x), count(*) FROM s GROUP BY k".to_string(),
        "SELECT s.g, t.v, count(*) FROM s JOIN t ON s.k = t.k GROUP BY s.g, t.v".to_string(),
        "SELECT s.k, t.v, count(*), sum(s.x) FROM s LEFT JOIN t ON s.k = t.k GROUP BY s.k, t.v"
            .to_string(),
        "SELECT t.k, count(s.x) FROM t LEFT JOIN s ON s.k = t.k GROUP BY t.k".to_string(),
        format!("SELECT g, count(*) FROM s WHERE k IN (SELECT k FROM t WHERE v > {c}) GROUP BY g"),
        "SELECT g, count(*) FROM s WHERE NOT EXISTS (SELECT 1 FROM t WHERE t.k = s.k) GROUP BY g"
            .to_string(),
        format!(
            "SELECT g, k, count(*) FROM s WHERE k NOT IN (SELECT k FROM t WHERE v > {c}) GROUP BY g, k"
        ),
        format!(
            "SELECT g, count(*) FROM s WHERE k NOT IN (SELECT CASE WHEN v > {d} THEN k END FROM t) GROUP BY g"
        ),
        format!(
            "SELECT g, k, x, n FROM (SELECT g, k, x, ROW_NUMBER() OVER (PARTITION BY g ORDER BY x DESC, k ASC NULLS LAST) AS n FROM s WHERE x IS NOT NULL) WHERE n <= {n}"
        ),
        format!(
            "SELECT k, total FROM (SELECT k, total, ROW_NUMBER() OVER (ORDER BY total DESC NULLS LAST, k ASC NULLS LAST) AS n FROM (SELECT k, sum(x) AS total FROM s GROUP BY k)) WHERE n <= {n}"
        ),
        format!(
            "SELECT k, x FROM s WHERE x IS NOT NULL ORDER BY x DESC, k ASC NULLS LAST LIMIT {limit}"
        ),
        "SELECT g, k, count(*), sum(x) FROM s GROUP BY ROLLUP (g, k)".to_string(),
        format!("SELECT DISTINCT g, k FROM s WHERE x < {c}"),
        "SELECT g, count(DISTINCT k), count(DISTINCT x) FROM s GROUP BY g".to_string(),
        format!(
            "SELECT k, sum(x) FILTER (WHERE x > {d}), count(*) FILTER (WHERE x < {c}) FROM s GROUP BY k"
        ),
        "SELECT g, median(CAST(x AS DOUBLE)) FROM s GROUP BY g".to_string(),
        format!(
            "SELECT k, count(*) FROM s WHERE x BETWEEN {} AND {} GROUP BY k HAVING count(*) > 1",
            c.min(d),
            c.max(d)
        ),
        "SELECT s.k, t.k, count(*) FROM s FULL JOIN t ON s.k = t.k GROUP BY s.k, t.k".to_string(),
        "SELECT t.k, t.v, count(s.x) FROM s RIGHT JOIN t ON s.k = t.k GROUP BY t.k, t.v".to_string(),
        format!("SELECT k FROM s WHERE x > {c} INTERSECT SELECT k FROM t WHERE v > {d}"),
        format!("SELECT k FROM t EXCEPT SELECT k FROM s WHERE x > {c}"),
        "SELECT g, max(total), min(total), count(*) FROM (SELECT g, k, sum(x) AS total FROM s GROUP BY g, k) GROUP BY g".to_string(),
        "SELECT g, k, count(*), grouping(k) FROM s GROUP BY CUBE (g, k)".to_string(),
        format!(
            "SELECT CASE WHEN x > {c} THEN 'high' WHEN x IS NULL THEN 'none' ELSE 'low' END AS band, coalesce(k, 'nobody') AS who, count(*) FROM s GROUP BY 1, 2"
        ),
        format!("SELECT a.k, a.n, t.v FROM (SELECT k, count(*) AS n FROM s WHERE x > {c} GROUP BY k) a JOIN t ON a.k = t.k"),
        format!("SELECT upper(k) AS u, length(g), count(*), sum(abs(x) * 2 + 1) FROM s WHERE x <> {c} GROUP BY 1, 2"),
        "SELECT k, v FROM t UNION ALL SELECT k, x FROM s WHERE x > 25".to_string(),
        format!("SELECT DISTINCT a.g FROM (SELECT g, k FROM s WHERE x > {c}) a JOIN t ON a.k = t.k WHERE t.v > {d}"),
        "SELECT g, round(avg(x), 3), round(stddev(x), 6), round(var_pop(x), 6) FROM s GROUP BY g".to_string(),
        format!("SELECT concat(g, '-', k) AS gk, max(x) - min(x) AS spread FROM s WHERE k IS NOT NULL GROUP BY 1 HAVING max(x) > {c}"),
        format!("SELECT t.k, count(*) FROM t WHERE EXISTS (SELECT 1 FROM s WHERE s.k = t.k AND s.x > {c}) GROUP BY t.k"),
        "SELECT k, ts, x, LAG(x) OVER (PARTITION BY k ORDER BY ts) AS before, LAG(x, 2, 0) OVER (PARTITION BY k ORDER BY ts) AS two_before FROM u".to_string(),
        "SELECT k, ts, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts) AS n, sum(x) OVER (PARTITION BY k ORDER BY ts) AS total FROM u".to_string(),
        format!("SELECT k, ts, avg(x) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN {n} PRECEDING AND CURRENT ROW) AS recent, max(x) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN {n} PRECEDING AND CURRENT ROW) AS top FROM u"),
        format!("SELECT k, ts, count(x) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '{} seconds' PRECEDING AND CURRENT ROW) AS recent FROM u", 5 * limit),
        format!("SELECT k, count(*) FROM (SELECT k, x - LAG(x) OVER (PARTITION BY k ORDER BY ts) AS step FROM u) WHERE step > {c} GROUP BY k"),
        format!("SELECT k, ts, x, LEAD(x) OVER (PARTITION BY k ORDER BY ts) AS after, LEAD(x, {n}, 0) OVER (PARTITION BY k ORDER BY ts) AS later, LAG(x) OVER (PARTITION BY k ORDER BY ts) AS before FROM u"),
        "SELECT k, ts, LEAD(ts) OVER (PARTITION BY k ORDER BY ts) AS next_ts, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts) AS n FROM u".to_string(),
        "SELECT k, max(gap), min(gap), count(gap) FROM (SELECT k, LEAD(ts) OVER (PARTITION BY k ORDER BY ts) - ts AS gap FROM u) GROUP BY k".to_string(),
        format!("SELECT k, ts, ts - LAG(ts) OVER (PARTITION BY k ORDER BY ts) AS since FROM u WHERE x > {c}"),
        format!("SELECT CAST(ts AS DATE) AS day, k, count(*), max(x) FROM s WHERE x > {c} GROUP BY 1, 2"),
        format!("SELECT g, array_agg(x ORDER BY x) FROM s WHERE x > {c} GROUP BY g"),
        "SELECT t.k, array_agg(s.x ORDER BY s.x) FROM s JOIN t ON s.k = t.k GROUP BY t.k".to_string(),
        "SELECT k, array_agg(x ORDER BY ts) FROM u GROUP BY k".to_string(),
        "SELECT k, array_agg(x ORDER BY ts DESC) FROM u GROUP BY k".to_string(),
        format!("SELECT k, array_agg(x ORDER BY ts) FILTER (WHERE x > {c}), count(*) FROM u GROUP BY k"),
        format!("SELECT g, array_agg(k ORDER BY k) FILTER (WHERE x <= {c}) FROM s GROUP BY g"),
        "SELECT g, array_agg(x ORDER BY x ASC NULLS FIRST) FROM s GROUP BY g".to_string(),
        "SELECT g, array_agg(x ORDER BY x DESC NULLS LAST) FROM s GROUP BY g".to_string(),
        format!("SELECT k, ts, avg(x) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN {n} PRECEDING AND {limit} FOLLOWING) AS centred, min(x) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN CURRENT ROW AND {n} FOLLOWING) AS low, count(x) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 1 PRECEDING AND 1 FOLLOWING) AS near FROM u"),
        format!("SELECT k, count(*), sum(rise) FROM (SELECT k, LEAD(x) OVER (PARTITION BY k ORDER BY ts) - x AS rise FROM u) WHERE rise > {c} - 20 GROUP BY k"),
        format!("SELECT k, ts, sum(x) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '{} seconds' PRECEDING AND INTERVAL '{} seconds' FOLLOWING) AS around, count(*) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN CURRENT ROW AND INTERVAL '{} seconds' FOLLOWING) AS soon, max(x) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '1 second' PRECEDING AND INTERVAL '{} seconds' FOLLOWING) AS top FROM u", 5 * n, 5 * limit, 3 * n, 2 * limit),
        format!("SELECT a.k, a.ts, b.ts, b.x FROM u a JOIN u b ON a.k = b.k AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '{} seconds'", 5 * n),
        format!("SELECT a.g, b.g, count(*), sum(a.x - b.x) FROM s a JOIN s b ON a.k = b.k AND a.ts BETWEEN b.ts - INTERVAL '{}' SECOND AND b.ts + INTERVAL '2 seconds' GROUP BY a.g, b.g", limit),
        format!("SELECT g, sum(DISTINCT x), avg(DISTINCT x), count(DISTINCT x) FROM s WHERE x > {c} GROUP BY g"),
        "SELECT t.v, sum(DISTINCT s.x), avg(DISTINCT s.x) FROM s JOIN t ON s.k = t.k GROUP BY t.v".to_string(),
        format!("SELECT k, x - (SELECT max(v) FROM t) FROM s WHERE x > {c}"),
        "SELECT g, count(*) FROM s WHERE x > (SELECT avg(v) FROM t) GROUP BY g".to_string(),
        format!("SELECT k, x, (SELECT count(*) FROM t WHERE t.k = s.k AND t.v > {d}) AS n, (SELECT max(v) FROM t WHERE t.k = s.k) AS top FROM s"),
        "SELECT s.k, s.x, t.v FROM s LEFT JOIN t ON s.k = t.k AND s.x > t.v".to_string(),
        format!("SELECT t.k, t.v, count(*), count(s.x) FROM s RIGHT JOIN t ON s.k = t.k AND s.x < t.v + {c} GROUP BY t.k, t.v"),
        format!("SELECT s.k, t.k, count(*), sum(s.x) FROM s FULL JOIN t ON s.k = t.k AND s.x - t.v BETWEEN {} AND {} GROUP BY s.k, t.k", c.min(d), c.max(d)),
        "SELECT g, count(*) FROM s WHERE EXISTS (SELECT 1 FROM t WHERE t.k = s.k AND t.v < s.x) GROUP BY g".to_string(),
        format!("SELECT g, k, count(*) FROM s WHERE NOT EXISTS (SELECT 1 FROM t WHERE t.k = s.k AND t.v > s.x + {c}) GROUP BY g, k"),
        "SELECT k, count(*) FROM t WHERE k IN (SELECT k FROM s WHERE s.x > t.v) GROUP BY k".to_string(),
        format!("SELECT t.k, t.v, count(*), count(s.x) FROM t LEFT JOIN s ON s.k = t.k AND s.x > t.v + {d} GROUP BY t.k, t.v"),
        format!("SELECT k, v FROM t WHERE NOT EXISTS (SELECT 1 FROM s WHERE s.k = t.k AND s.x < t.v - {c})"),
        format!("SELECT a.k, a.ts, a.x, b.ts, b.x FROM u a LEFT JOIN u b ON a.k = b.k AND b.ts > a.ts AND b.ts <= a.ts + INTERVAL '{} seconds'", n + 1),
        format!("SELECT b.k, b.ts, count(*), count(a.x) FROM s a RIGHT JOIN s b ON a.k = b.k AND a.ts BETWEEN b.ts - INTERVAL '{}' SECOND AND b.ts - INTERVAL '1 second' GROUP BY b.k, b.ts", limit),
        format!("SELECT a.k, b.k, count(*), count(a.x), count(b.x) FROM s a FULL JOIN u b ON a.k = b.k AND a.ts >= b.ts AND a.ts < b.ts + INTERVAL '{} seconds' GROUP BY a.k, b.k", n + 2),
        format!("SELECT a.k, a.ts, a.x FROM u a WHERE EXISTS (SELECT 1 FROM s b WHERE b.k = a.k AND b.ts BETWEEN a.ts - INTERVAL '{} seconds' AND a.ts + INTERVAL '1 second')", n),
        format!("SELECT g, count(*) FROM s a WHERE NOT EXISTS (SELECT 1 FROM s b WHERE b.k = a.k AND b.ts > a.ts AND b.ts < a.ts + INTERVAL '{} seconds') GROUP BY g", n + 1),
    ]
}

/// Windowed queries: ours with `TUMBLE`, DuckDB's with `time_bucket` (both align windows to
/// the epoch).
fn windowed(random: &mut Lcg) -> Vec<(String, String)> {
    let size = [10, 30, 60][random.below(3) as usize];
    let c = random.between(-15, 15);
    let window = |columns: &str, from: &str, group: &str| {
        (
            format!(
                "SELECT {columns} FROM TUMBLE({from}, ts, INTERVAL '{size} seconds') GROUP BY {group}"
            ),
            format!(
                "SELECT {} FROM (SELECT *, time_bucket(INTERVAL '{size} seconds', ts) AS window_start FROM {from}) GROUP BY {group}",
                columns
            ),
        )
    };
    vec![
        window(
            "g, window_start, count(*), sum(x), max(x), min(x)",
            "s",
            "g, window_start",
        ),
        window(
            "window_start, count(DISTINCT k), avg(x)",
            "s",
            "window_start",
        ),
        {
            let (ours, theirs) = window("k, window_start, count(*) AS n", "s", "k, window_start");
            (
                format!(
                    "SELECT w.k, w.window_start, w.n, t.v FROM ({ours}) w JOIN t ON w.k = t.k WHERE t.v > {c}"
                ),
                format!(
                    "SELECT w.k, w.window_start, w.n, t.v FROM ({theirs}) w JOIN t ON w.k = t.k WHERE t.v > {c}"
                ),
            )
        },
    ]
}

/// Reads of the versioned table `h`: ours as of each row's time (`FOR SYSTEM_TIME AS OF`) or
/// plainly (its latest version of each key), DuckDB's with `ASOF JOIN` and `QUALIFY`.
fn versioned(random: &mut Lcg) -> Vec<(String, String)> {
    let c = random.between(-15, 15);
    let size = [10, 30, 60][random.below(3) as usize];
    vec![
        (
            "SELECT s.k, s.ts, s.x, h.v, h.valid_from FROM s JOIN h FOR SYSTEM_TIME AS OF s.ts ON s.k = h.k".to_string(),
            "SELECT s.k, s.ts, s.x, h.v, h.valid_from FROM s ASOF JOIN h ON s.k = h.k AND s.ts >= h.valid_from".to_string(),
        ),
        (
            "SELECT s.k, s.ts, h.v FROM s LEFT JOIN h FOR SYSTEM_TIME AS OF s.ts ON s.k = h.k".to_string(),
            "SELECT s.k, s.ts, h.v FROM s ASOF LEFT JOIN h ON s.k = h.k AND s.ts >= h.valid_from".to_string(),
        ),
        (
            // The other conditions of a LEFT as-of join pad the reading whose version fails
            // them (DuckDB's ASOF takes no other conditions: it pads by CASE).
            format!("SELECT s.k, s.ts, s.x, h.v FROM s LEFT JOIN h FOR SYSTEM_TIME AS OF s.ts ON s.k = h.k AND h.v > s.x - {c}"),
            format!("SELECT s.k, s.ts, s.x, CASE WHEN h.v > s.x - {c} THEN h.v END FROM s ASOF LEFT JOIN h ON s.k = h.k AND s.ts >= h.valid_from"),
        ),
        (
            format!("SELECT s.g, count(*), sum(s.x * h.v) FROM s JOIN h FOR SYSTEM_TIME AS OF s.ts ON s.k = h.k WHERE h.v > {c} GROUP BY s.g"),
            format!("SELECT s.g, count(*), sum(s.x * h.v) FROM s ASOF JOIN h ON s.k = h.k AND s.ts >= h.valid_from WHERE h.v > {c} GROUP BY s.g"),
        ),
        (
            format!("SELECT window_start, count(*), sum(h.v) FROM TUMBLE(s, ts, INTERVAL '{size} seconds') AS s JOIN h FOR SYSTEM_TIME AS OF s.ts ON s.k = h.k GROUP BY window_start"),
            format!("SELECT window_start, count(*), sum(h.v) FROM (SELECT *, time_bucket(INTERVAL '{size} seconds', ts) AS window_start FROM s) s ASOF JOIN h ON s.k = h.k AND s.ts >= h.valid_from GROUP BY window_start"),
        ),
        (
            "SELECT k, valid_from, v FROM h".to_string(),
            "SELECT k, valid_from, v FROM h QUALIFY row_number() OVER (PARTITION BY k ORDER BY valid_from DESC) = 1".to_string(),
        ),
        // A sum of lengths of time: DuckDB sums intervals' seconds only.
        (
            "SELECT k, sum(gap), count(gap) FROM (SELECT k, LEAD(ts) OVER (PARTITION BY k ORDER BY ts) - ts AS gap FROM u WHERE x > 0) GROUP BY k".to_string(),
            "SELECT k, to_seconds(sum(epoch(gap))), count(gap) FROM (SELECT k, LEAD(ts) OVER (PARTITION BY k ORDER BY ts) - ts AS gap FROM u WHERE x > 0) GROUP BY k".to_string(),
        ),
        (
            "SELECT k, ts, sum(gap) OVER (PARTITION BY k ORDER BY ts) FROM (SELECT k, ts, ts - LAG(ts) OVER (PARTITION BY k ORDER BY ts) AS gap FROM u)".to_string(),
            "SELECT k, ts, to_seconds(sum(epoch(gap)) OVER (PARTITION BY k ORDER BY ts)) FROM (SELECT k, ts, ts - LAG(ts) OVER (PARTITION BY k ORDER BY ts) AS gap FROM u)".to_string(),
        ),
    ]
}

/// A value as both sides are compared: numbers to 9 significant digits.
fn canonical_number(value: f64) -> String {
    if value == 0.0 {
        return "0".to_string();
    }
    format!("{:.8e}", value)
}

fn canonical_datum(datum: &Datum) -> String {
    match datum {
        Datum::Null => "NULL".to_string(),
        Datum::Boolean(b) => b.to_string(),
        Datum::Int64(v) => canonical_number(*v as f64),
        Datum::Float64(v) => canonical_number(*v),
        Datum::Utf8(s) => s.to_string(),
        Datum::Timestamp(ns) => ns.to_string(),
        Datum::Duration(ns) => canonical_number(*ns as f64),
        Datum::Date(days) => canonical_number(f64::from(*days)),
        Datum::Decimal { .. } => canonical_number(datum.as_f64().unwrap_or(f64::NAN)),
        Datum::List(values) => format!(
            "[{}]",
            values
                .iter()
                .map(canonical_datum)
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

fn canonical_json(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "NULL".to_string(),
        serde_json::Value::Bool(b) => b.to_string(),
        // Timestamps come as whole nanoseconds, compared exactly.
        serde_json::Value::Number(n) if n.as_i64().is_some_and(|v| v.abs() >= 1 << 53) => {
            n.to_string()
        }
        serde_json::Value::Number(n) => canonical_number(n.as_f64().unwrap()),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(values) => format!(
            "[{}]",
            values
                .iter()
                .map(canonical_json)
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other.to_string(),
    }
}

/// The engine's final rows of each query, sorted.
fn engine_answers(dir: &Path, queries: &[String]) -> Vec<Result<Vec<String>, String>> {
    let mut planner = Planner::new(vibelux_connectors::registry::with_audit_trail(
        &dir.join("audit.jsonl"),
    ));
    let setup = format!(
        "CREATE SOURCE s (k TEXT, g TEXT, x BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '10 seconds')
           WITH (connector = 'file', path = '{}');
         CREATE TABLE t (k TEXT, v BIGINT, PRIMARY KEY (k))
           WITH (connector = 'file', path = '{}', format = 'csv');
         CREATE SOURCE u (k TEXT, x BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '10 seconds')
           WITH (connector = 'file', path = '{}');
         CREATE TABLE h (k TEXT, valid_from TIMESTAMP, v BIGINT, PRIMARY KEY (k),
           WATERMARK FOR valid_from AS valid_from - INTERVAL '10 seconds')
           WITH (connector = 'file', path = '{}');",
        dir.join("s.jsonl").display(),
        dir.join("t.csv").display(),
        dir.join("u.jsonl").display(),
        dir.join("h.jsonl").display()
    );
    for statement in parse_pipeline(&setup).unwrap() {
        planner.execute(&statement).unwrap();
    }
    queries
        .iter()
        .map(|query| {
            let statements = parse_pipeline(query).map_err(|e| e.to_string())?;
            let Outcome::Query { node } =
                planner.execute(&statements[0]).map_err(|e| e.to_string())?
            else {
                return Err("not a query".to_string());
            };
            let rows = query_to_completion(&planner.plan, node, 2).map_err(|e| format!("{e:#}"))?;
            let mut rows: Vec<String> = rows
                .iter()
                .map(|row| {
                    row.iter()
                        .map(canonical_datum)
                        .collect::<Vec<_>>()
                        .join(" | ")
                })
                .collect();
            rows.sort();
            Ok(rows)
        })
        .collect()
}

const DUCKDB: &str = r#"
import datetime, duckdb, json, sys
epoch = datetime.datetime(1970, 1, 1)
def plain(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, datetime.datetime):
        return (v - epoch) // datetime.timedelta(microseconds=1) * 1000
    if isinstance(v, datetime.timedelta):
        return v // datetime.timedelta(microseconds=1) * 1000
    if isinstance(v, datetime.date):
        return (v - epoch.date()).days
    if isinstance(v, list):
        return [plain(x) for x in v]
    return float(v)
folder, queries = sys.argv[1], json.load(open(sys.argv[2]))
db = duckdb.connect()
db.execute(f"CREATE TABLE s AS SELECT * FROM read_json('{folder}/s.jsonl', format='newline_delimited', columns={{'k': 'VARCHAR', 'g': 'VARCHAR', 'x': 'BIGINT', 'ts': 'TIMESTAMP'}})")
db.execute(f"CREATE TABLE t AS SELECT * FROM read_csv('{folder}/t_final.csv', header=true, columns={{'k': 'VARCHAR', 'v': 'BIGINT'}})")
db.execute(f"CREATE TABLE h AS SELECT * FROM read_json('{folder}/h.jsonl', format='newline_delimited', columns={{'k': 'VARCHAR', 'valid_from': 'TIMESTAMP', 'v': 'BIGINT'}})")
db.execute(f"CREATE TABLE u AS SELECT * FROM read_json('{folder}/u.jsonl', format='newline_delimited', columns={{'k': 'VARCHAR', 'x': 'BIGINT', 'ts': 'TIMESTAMP'}})")
answers = []
for query in queries:
    try:
        rows = db.execute(query).fetchall()
        answers.append({"rows": [[plain(v) for v in row] for row in rows]})
    except Exception as error:
        answers.append({"error": str(error)})
print(json.dumps(answers))
"#;

/// DuckDB's rows of each query, sorted.
fn duckdb_answers(dir: &Path, queries: &[String]) -> Vec<Result<Vec<String>, String>> {
    std::fs::write(
        dir.join("queries.json"),
        serde_json::to_string(queries).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("duckdb_oracle.py"), DUCKDB).unwrap();
    let output = Command::new("python3")
        .arg(dir.join("duckdb_oracle.py"))
        .arg(dir)
        .arg(dir.join("queries.json"))
        .output()
        .expect("python3 runs (the test script installs it with duckdb)");
    assert!(
        output.status.success(),
        "DuckDB (python3 -m pip install duckdb) failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    answers
        .iter()
        .map(|answer| match answer.get("rows") {
            Some(rows) => {
                let mut rows: Vec<String> = rows
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|row| {
                        row.as_array()
                            .unwrap()
                            .iter()
                            .map(canonical_json)
                            .collect::<Vec<_>>()
                            .join(" | ")
                    })
                    .collect();
                rows.sort();
                Ok(rows)
            }
            None => Err(answer["error"].to_string()),
        })
        .collect()
}

#[test]
fn views_end_with_what_duckdb_answers_over_the_final_inputs() {
    let mut differences = Vec::new();
    let mut compared = 0;
    let mut rows = 0;
    for seed in SEEDS {
        let dir = tempfile::tempdir().unwrap();
        let mut random = Lcg(seed);
        write_inputs(dir.path(), &mut random);
        let mut queries = queries(&mut random);
        let mut duckdb_queries = queries.clone();
        for (ours, theirs) in windowed(&mut random)
            .into_iter()
            .chain(versioned(&mut random))
        {
            queries.push(ours);
            duckdb_queries.push(theirs);
        }
        let ours = engine_answers(dir.path(), &queries);
        let theirs = duckdb_answers(dir.path(), &duckdb_queries);
        for ((query, ours), theirs) in queries.iter().zip(ours).zip(theirs) {
            compared += 1;
            match (ours, theirs) {
                (Ok(ours), Ok(theirs)) if ours == theirs => rows += ours.len(),
                (ours, theirs) => differences.push(format!(
                    "seed {seed}: {query}\n  vibelux: {ours:?}\n  duckdb:  {theirs:?}"
                )),
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {compared} queries differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
    assert!(compared >= 1_500, "only {compared} queries compared");
    assert!(rows >= 4_000, "only {rows} rows compared");
}
