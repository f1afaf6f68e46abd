//! Fuzzing without a nightly compiler: seeds from `fuzz/corpus/TARGET/`, mutated
//! ([`mutate`]), fed to each parser behind its real entry point ([`targets`]), every panic
//! caught and kept as a finding with the input that caused it.
//!
//! cargo-fuzz needs nightly and AFL a separate instrumented build; this runs on the stable
//! toolchain the project builds with, in-process, at the speed of the parsers themselves, so
//! ten million inputs per target fit in minutes. It is not coverage-guided: the seeds and the
//! dictionaries carry the grammar instead. Inputs that once made a target panic are kept in
//! `fuzz/regressions/TARGET/` and replayed by the tests.

pub mod mutate;
pub mod targets;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mutate::Mutator;
use targets::Target;

/// What a run found.
pub struct Report {
    pub target: &'static str,
    pub inputs: u64,
    pub elapsed: Duration,
    /// Each panic: its message and the input.
    pub panics: Vec<(String, Vec<u8>)>,
    /// The slowest input and how long it took (a hang shows up here first).
    pub slowest: (Duration, Vec<u8>),
}

/// The files of a folder, in name order (empty when it does not exist).
pub fn read_inputs(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.is_file())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| std::fs::read(path).ok())
        .collect()
}

/// Where the corpus and regressions live.
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// A target's seeds: its corpus, the inputs that once broke it, and what the repository
/// already holds of its language (the example pipelines, the example tag maps).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = fuzz_dir();
    let mut inputs = read_inputs(&dir.join("corpus").join(target));
    inputs.extend(read_inputs(&dir.join("regressions").join(target)));
    let examples = dir.join("../examples");
    let (folder, extension) = match target {
        "sql" => (examples, "sql"),
        "tagmap" => (examples.join("plc"), "toml"),
        _ => return inputs,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(folder)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect();
    paths.sort();
    inputs.extend(
        paths
            .into_iter()
            .filter_map(|path| std::fs::read(path).ok()),
    );
    inputs
}

/// Captures panic messages instead of printing them, for the whole process.
fn quiet_panics() -> Arc<Mutex<String>> {
    let last = Arc::new(Mutex::new(String::new()));
    let kept = last.clone();
    std::panic::set_hook(Box::new(move |info| {
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        *kept.lock().unwrap_or_else(|p| p.into_inner()) = format!("{info}{place}");
    }));
    last
}

/// The `index`-th input a run with these seeds would feed (counting the seeds first): for
/// reproducing what crashed a whole process (a stack overflow cannot be caught).
pub fn nth_input(target: &dyn Target, inputs: &[Vec<u8>], seed: u64, index: u64) -> Vec<u8> {
    if let Some(input) = inputs.get(index as usize) {
        return input.clone();
    }
    let mut seeds: Vec<Vec<u8>> = inputs.to_vec();
    if seeds.is_empty() {
        seeds.push(Vec::new());
    }
    let mut mutator = Mutator::new(seed, target.dictionary(), target.max_len());
    let mut input = Vec::new();
    for _ in inputs.len() as u64..=index {
        input = mutator.next(&seeds);
    }
    input
}

/// Feeds `inputs` first (each as is), then `count` mutated inputs to `target`, on a thread with
/// the stack the engine's API threads have: a stack overflow aborts the process and cannot be
/// caught, so the fuzzer runs with the room production has, not a test thread's 2 MiB.
pub fn run(target: &mut dyn Target, inputs: &[Vec<u8>], count: u64, seed: u64) -> Report {
    let current: Arc<Mutex<(Instant, Vec<u8>)>> =
        Arc::new(Mutex::new((Instant::now(), Vec::new())));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let name = target.name();
    // A hang cannot be caught either: the watchdog keeps the input and ends the process.
    let watchdog = {
        let (current, done) = (current.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let (started, input) = &*current.lock().unwrap_or_else(|p| p.into_inner());
                if started.elapsed() > HANG {
                    let findings = fuzz_dir().join("findings");
                    let _ = std::fs::create_dir_all(&findings);
                    let path = findings.join(format!("{name}-hang-{seed}.bin"));
                    let _ = std::fs::write(&path, input);
                    eprintln!(
                        "{name}: an input ran for more than {HANG:?}: kept in {}",
                        path.display()
                    );
                    std::process::exit(2);
                }
            }
        })
    };
    let report = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name(format!("fuzz-{}", target.name()))
            .stack_size(vibelux::server::PLANNING_STACK_BYTES)
            .spawn_scoped(scope, || run_here(target, inputs, count, seed, &current))
            .expect("a fuzzing thread starts")
            .join()
            .expect("the fuzzing thread catches panics")
    });
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watchdog.join();
    report
}

/// How long one input may take before it counts as a hang.
const HANG: Duration = Duration::from_secs(10);

fn run_here(
    target: &mut dyn Target,
    inputs: &[Vec<u8>],
    count: u64,
    seed: u64,
    current: &Mutex<(Instant, Vec<u8>)>,
) -> Report {
    let last_panic = quiet_panics();
    let mut seeds: Vec<Vec<u8>> = inputs.to_vec();
    if seeds.is_empty() {
        seeds.push(Vec::new());
    }
    let mut mutator = Mutator::new(seed, target.dictionary(), target.max_len());
    let mut report = Report {
        target: target.name(),
        inputs: 0,
        elapsed: Duration::ZERO,
        panics: Vec::new(),
        slowest: (Duration::ZERO, Vec::new()),
    };
    let started = Instant::now();
    let total = inputs.len() as u64 + count;
    for index in 0..total {
        let input = match inputs.get(index as usize) {
            Some(input) => input.clone(),
            None => mutator.next(&seeds),
        };
        let began = Instant::now();
        *current.lock().unwrap_or_else(|p| p.into_inner()) = (began, input.clone());
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target.run(&input)));
        let took = began.elapsed();
        if took > report.slowest.0 {
            report.slowest = (took, input.clone());
        }
        if outcome.is_err() {
            let message = last_panic.lock().unwrap_or_else(|p| p.into_inner()).clone();
            // One finding per place: the same bug found again adds nothing.
            let place = message.rsplit(" at ").next().unwrap_or("").to_string();
            if !report.panics.iter().any(|(m, _)| m.ends_with(&place)) {
                report.panics.push((message, input));
            }
        }
        report.inputs += 1;
    }
    report.elapsed = started.elapsed();
    let _ = std::panic::take_hook();
    report
}
