//! A short run of every fuzz target, and every input that once made one panic: the full runs
//! (ten million inputs each) are `vibelux-fuzz`'s, not the test suite's.

use vibelux_fuzz::{run, seeds, targets};

#[test]
fn every_target_takes_its_corpus_its_regressions_and_mutations_without_panicking() {
    let mut failures = Vec::new();
    for mut target in targets::all() {
        let name = target.name();
        let inputs = seeds(name);
        assert!(!inputs.is_empty(), "fuzz/corpus/{name} has no seeds");
        // Another seed than the full runs' default, so the two cover different ground.
        let seed = 20_261_205;
        let report = run(target.as_mut(), &inputs, 3_000, seed);
        for (message, input) in report.panics {
            failures.push(format!(
                "{name} (seed {seed}): {message}\n  input: {input:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
