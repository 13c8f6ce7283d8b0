//! The work of each `ove-train` subcommand, one module per subcommand: its arguments (a
//! `clap::Args` struct whose field docs are the `--help` text) and a `run` that does what
//! the binary used to do inline. `src/main.rs` only parses the command line and calls them.
//!
//! - [`trace`]: `ove-train trace` (a golden-style case's intermediates, optionally compared);
//! - [`train`]: `ove-train train` (one stage of training, resumable);
//! - [`ctc`]: `ove-train ctc` (the encoder and the CTC line-reader head, on text lines);
//! - [`pack`]: `ove-train pack` (offline bin packing of a data set);
//! - [`balance`]: `ove-train balance` (concept balancing weights);
//! - [`bench_train`]: `ove-train bench-train` (training throughput and MFU);
//! - [`plot`]: `ove-train plot` (a run's metrics as a PNG);
//! - [`exec`]: the flags `train` and `bench-train` share for how a step runs;
//! - [`resave`]: `ove-train resave` (load and save a checkpoint again).
//!
//! The default-model recipe's subcommands (`tokenizer`, `init`, `prepare`) are
//! [`crate::recipe::RecipeCommand`].
//!
//! Log lines keep the target `ove_train` they had when this code lived in the binary, so
//! `RUST_LOG` filters and the printed lines are what they were.

pub mod balance;
pub mod bench_train;
pub mod ctc;
pub mod exec;
pub mod pack;
pub mod plot;
pub mod resave;
pub mod trace;
pub mod train;

/// The `tracing` target of the subcommands' log lines (the binary's crate name).
pub(crate) const LOG_TARGET: &str = "ove_train";
