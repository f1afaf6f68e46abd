//! `vibelux-fuzz [TARGET…] [--inputs N] [--seed S]`: fuzzes the parsers (all of them by
//! default) and reports the inputs per second, the slowest input and every panic, each kept
//! in `fuzz/findings/`. Exits 1 when something panicked.

use clap::Parser;
use vibelux_fuzz::{fuzz_dir, nth_input, run, seeds, targets};

#[derive(Parser)]
struct Args {
    /// Targets to run (sql, json, csv, sparkplug, modbus, tagmap, websocket, postgres); all by default.
    targets: Vec<String>,
    /// Mutated inputs per target, after its corpus and regressions.
    #[arg(long, default_value_t = 10_000_000)]
    inputs: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the input a run would feed at this position (the first is 1) instead of running:
    /// for what crashed the whole process.
    #[arg(long, value_name = "N")]
    show: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut all = targets::all();
    let known: Vec<&str> = all.iter().map(|t| t.name()).collect();
    if let Some(unknown) = args.targets.iter().find(|t| !known.contains(&t.as_str())) {
        anyhow::bail!("no target `{unknown}`: {}", known.join(", "));
    }
    let dir = fuzz_dir();
    let mut found = false;
    for target in all.iter_mut() {
        let name = target.name();
        if !args.targets.is_empty() && !args.targets.iter().any(|t| t == name) {
            continue;
        }
        let inputs = seeds(name);
        if let Some(position) = args.show {
            use std::io::Write as _;
            let input = nth_input(
                target.as_ref(),
                &inputs,
                args.seed,
                position.saturating_sub(1),
            );
            std::io::stdout().write_all(&input)?;
            continue;
        }
        let report = run(target.as_mut(), &inputs, args.inputs, args.seed);
        let seconds = report.elapsed.as_secs_f64();
        println!(
            "{name}: {} inputs ({} seeds) in {seconds:.1} s, {:.0}/s; slowest {:.2} ms; {} panics",
            report.inputs,
            inputs.len(),
            report.inputs as f64 / seconds.max(1e-9),
            report.slowest.0.as_secs_f64() * 1e3,
            report.panics.len()
        );
        for (index, (message, input)) in report.panics.iter().enumerate() {
            found = true;
            let findings = dir.join("findings");
            std::fs::create_dir_all(&findings)?;
            let path = findings.join(format!("{name}-{}-{index}.bin", args.seed));
            std::fs::write(&path, input)?;
            println!("  panic: {message}\n  input: {}", path.display());
        }
    }
    if found {
        std::process::exit(1);
    }
    Ok(())
}
