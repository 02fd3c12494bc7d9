//! One module per subcommand. Each takes its parsed arguments from [`crate::cli`] and
//! returns the process exit code; commands share library modules, never each other.

pub mod check;
pub mod configs;
pub mod loadgen;
pub mod replay;
pub mod run;
