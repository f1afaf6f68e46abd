//! Runs the SQL corpus in `queries/tests/slt/*.slt` against the engine.
//!
//! Statements build a catalog as a pipeline file would; a query runs the dataflow over the
//! (bounded) inputs to completion and returns the view's final contents. Every query runs with
//! 1, 2 and 4 workers and must give the same rows each time: that is how the corpus pins
//! determinism. `SET test_workers = '1'` narrows the worker counts for the rest of a file (for
//! cases that depend on one arrival order, like rows beyond the allowed lateness).

use std::path::Path;

use sqllogictest::{DBOutput, DefaultColumnType};
use vibelux::format::row_text;
use vibelux::pipeline::query_to_completion;
use vibelux_queries::parser::parse_pipeline;
use vibelux_queries::planner::{Outcome, Planner};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct CorpusError(String);

struct Engine {
    planner: Planner,
    workers: Vec<usize>,
}

impl Engine {
    fn new() -> Self {
        Engine {
            planner: Planner::new(vibelux_connectors::registry::with_audit_trail(
                std::path::Path::new("corpus.audit.jsonl"),
            )),
            workers: vec![1, 2, 4],
        }
    }

    fn set(&mut self, sql: &str) -> Option<Result<DBOutput<DefaultColumnType>, CorpusError>> {
        let rest = sql.trim().strip_prefix("SET test_workers")?;
        let value = rest
            .trim()
            .trim_start_matches('=')
            .trim()
            .trim_matches('\'');
        let workers: Result<Vec<usize>, _> = value.split(',').map(|w| w.trim().parse()).collect();
        Some(match workers {
            Ok(workers) if !workers.is_empty() => {
                self.workers = workers;
                Ok(DBOutput::StatementComplete(0))
            }
            _ => Err(CorpusError(format!("bad worker list {value:?}"))),
        })
    }
}

impl sqllogictest::DB for Engine {
    type Error = CorpusError;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, CorpusError> {
        if let Some(result) = self.set(sql) {
            return result;
        }
        let statements = parse_pipeline(sql).map_err(|error| CorpusError(error.to_string()))?;
        let mut output = DBOutput::StatementComplete(0);
        for statement in statements {
            let outcome = self
                .planner
                .execute(&statement)
                .map_err(|error| CorpusError(error.to_string()))?;
            output = match outcome {
                Outcome::Done(_) => DBOutput::StatementComplete(0),
                Outcome::Table { columns, rows } => DBOutput::Rows {
                    types: vec![DefaultColumnType::Any; columns.len()],
                    rows,
                },
                Outcome::Text(text) => DBOutput::Rows {
                    types: vec![DefaultColumnType::Text],
                    rows: text.lines().map(|line| vec![line.to_string()]).collect(),
                },
                Outcome::Query { node } => {
                    let mut results = Vec::new();
                    for &workers in &self.workers {
                        let rows = query_to_completion(&self.planner.plan, node, workers)
                            .map_err(|error| CorpusError(format!("{error:#}")))?;
                        let mut rows: Vec<Vec<String>> = rows.iter().map(row_text).collect();
                        rows.sort();
                        results.push((workers, rows));
                    }
                    let (first_workers, first) = &results[0];
                    for (workers, rows) in &results[1..] {
                        if rows != first {
                            return Err(CorpusError(format!(
                                "nondeterministic result: {first_workers} worker(s) gave {first:?}, {workers} gave {rows:?}"
                            )));
                        }
                    }
                    let columns = self.planner.plan.nodes[node].schema.fields().len();
                    DBOutput::Rows {
                        types: vec![DefaultColumnType::Any; columns],
                        rows: results.swap_remove(0).1,
                    }
                }
            };
        }
        Ok(output)
    }

    fn engine_name(&self) -> &str {
        "vibelux"
    }
}

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/slt");
    // Pipelines in the corpus name their data files relative to the corpus folder.
    std::env::set_current_dir(&corpus).expect("the corpus folder exists");
    let mut files: Vec<_> = std::fs::read_dir(".")
        .expect("readable corpus folder")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", corpus.display());
    let tests = files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            sqllogictest::harness::Trial::test(name, move || {
                // Planned with the stack the engine plans with (its main thread, its API
                // threads), not a test thread's 2 MiB: nesting is bounded for those.
                std::thread::Builder::new()
                    .stack_size(vibelux::server::PLANNING_STACK_BYTES)
                    .spawn(move || {
                        let mut runner = sqllogictest::Runner::new(|| async { Ok(Engine::new()) });
                        runner.run_file(&path).map_err(|error| {
                            sqllogictest::harness::Failed::from(error.display(true).to_string())
                        })
                    })
                    .expect("a corpus thread starts")
                    .join()
                    .unwrap_or_else(|_| Err(sqllogictest::harness::Failed::from("panicked")))
            })
        })
        .collect();
    sqllogictest::harness::run(&sqllogictest::harness::Arguments::from_args(), tests).exit();
}
