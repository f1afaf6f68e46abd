//! The SQL behaviour corpus of Vibelux, run end to end.
//!
//! The `.slt` files in `queries/tests/slt/` pin what every statement, function, window, join and
//! error does. Running them needs the whole engine (planning, then a dataflow over the files they
//! name), which the SQL crate must not depend on; this crate holds the runner, in `tests/`, so that
//! `cargo test -p vibelux-sql-corpus` runs the corpus.
