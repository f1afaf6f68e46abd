//! Reading what a pipeline's file sinks wrote: JSON lines, and the test messages
//! (`seq`, `temp_c = seq / 100`) the broker tests publish.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Waits until `path` holds at least `count` JSON lines; returns them.
pub fn wait_for_lines(path: &Path, count: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines = json_lines(path);
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} of {count} lines",
            path.display(),
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every sequence number in the files, with its temperature, once; a message that arrived
/// twice must have arrived the same.
pub fn received(files: &[&Path]) -> BTreeMap<i64, f64> {
    let mut seen = BTreeMap::new();
    for file in files {
        for row in json_lines(file) {
            let seq = row["seq"].as_i64().unwrap();
            let temp = row["temp_c"].as_f64().unwrap();
            if let Some(earlier) = seen.insert(seq, temp) {
                assert_eq!(earlier, temp, "message {seq} arrived twice, differently");
            }
        }
    }
    seen
}

/// Waits until the files hold `count` distinct messages (60 s at most, then fails naming the
/// first missing ones); returns them.
pub fn wait_for_received(files: &[&Path], count: usize) -> BTreeMap<i64, f64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = received(files);
        if seen.len() >= count {
            return seen;
        }
        if Instant::now() > deadline {
            let missing: Vec<i64> = (0..count as i64)
                .filter(|seq| !seen.contains_key(seq))
                .take(20)
                .collect();
            panic!(
                "{} of {count} messages arrived; first missing: {missing:?}",
                seen.len()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// For each committed epoch of the warehouse table at `table`, the writers whose files it holds
/// (a staged file's name ends with its writer, `…-w1.tmp`, and the manifest records it).
pub fn writers_of_each_epoch(table: &Path) -> Vec<std::collections::BTreeSet<String>> {
    let Ok(manifests) = std::fs::read_dir(table.join("_manifests")) else {
        return Vec::new();
    };
    manifests
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let manifest: serde_json::Value =
                serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
            let writers = manifest["files"]
                .as_array()?
                .iter()
                .filter_map(|file| {
                    let staged = file["staged"].as_str()?.strip_suffix(".tmp")?;
                    Some(staged.rsplit_once("-w")?.1.to_string())
                })
                .collect();
            Some(writers)
        })
        .collect()
}
