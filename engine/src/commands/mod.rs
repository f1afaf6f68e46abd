//! The `vibelux` binary's commands that need more than a few lines (the library holds the
//! engine; these start it and talk to the person at the terminal).

pub mod probe;
pub mod run;
