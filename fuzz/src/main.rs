//! `ove-fuzz`: the fuzz targets' command line. `bench/fuzz.sh` drives it; see docs/FUZZING.md.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ove_fuzz::{panics, replay_one, seeds, Target};

/// Fuzz targets for every reader of untrusted bytes in OneVision Edge.
///
/// AFL++ runs `ove-fuzz run TARGET` (a build made by `cargo afl build --features afl`);
/// `bench/fuzz.sh` does all of it. `replay` runs saved inputs through a target outside
/// AFL++, to reproduce a crash or a hang with a readable message.
#[derive(Parser)]
#[command(name = "ove-fuzz")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Prints the targets, one a line: name, AFL++ dictionary, what it reads.
    List,
    /// Writes the seed corpus of every target under OUT/TARGET/.
    Seeds { out: PathBuf },
    /// Runs files (or every file of folders) through a target; prints each input's time
    /// and peak memory, and exits 1 on the first finding.
    Replay {
        #[arg(value_enum)]
        target: Target,
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// The AFL++ persistent loop over one target (AFL++ starts it; needs the `afl` feature).
    Run {
        #[arg(value_enum)]
        target: Target,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ove-fuzz: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::List => {
            for t in Target::ALL {
                println!("{}\t{}", t.name(), t.dictionary().unwrap_or("-"));
            }
        }
        Cmd::Seeds { out } => {
            for (name, n) in seeds::write_all(&out)? {
                println!("{name}\t{n} seeds");
            }
        }
        Cmd::Replay { target, inputs } => {
            panics::install(false);
            for path in files(&inputs)? {
                let data =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                let name = path.display().to_string();
                let r = replay_one(target, &name, &data);
                let ms = r.took.as_secs_f64() * 1e3;
                let peak = r.peak_bytes as f64 / (1 << 20) as f64;
                println!("{name}\t{ms:.1} ms\t{peak:.1} MiB peak");
                if r.panicked || panics::findings() > 0 {
                    eprintln!("ove-fuzz: {name}: a finding (see the panic above)");
                    return Ok(ExitCode::from(1));
                }
            }
        }
        Cmd::Run { target } => afl_loop(target)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The files named, folders expanded one level, sorted.
fn files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("listing {}", p.display()))?
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<_>>()
                .with_context(|| format!("listing {}", p.display()))?;
            v.retain(|f| f.is_file() && !is_readme(f));
            v.sort();
            out.extend(v);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn is_readme(p: &Path) -> bool {
    p.file_name().is_some_and(|n| n == "README.md")
}

#[cfg(feature = "afl")]
fn afl_loop(target: Target) -> Result<()> {
    panics::install(true);
    // Made before the fork server starts, so each child does not build them again.
    ove_fuzz::fixtures::get();
    afl::fuzz_nohook!(|data: &[u8]| target.check(data));
    Ok(())
}

#[cfg(not(feature = "afl"))]
fn afl_loop(_target: Target) -> Result<()> {
    anyhow::bail!(
        "this ove-fuzz was built without the afl feature: bench/fuzz.sh builds the one AFL++ runs"
    )
}
