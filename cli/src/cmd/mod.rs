//! One module per subcommand: its clap `Args` and its `run`, which returns the exit code.

pub mod bench;
pub mod compare;
pub mod deploy;
pub mod eval;
pub mod export;
pub mod layout;
pub mod ocr;
pub mod preprocess;
pub mod run;
#[cfg(feature = "serve")]
pub mod serve;
pub mod trace;
pub mod train;
