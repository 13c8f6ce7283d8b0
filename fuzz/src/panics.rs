//! Which panics count as findings.
//!
//! A panic in the project's own code is always a finding, even where a `catch_unwind` up the
//! stack would turn it into an error: the process would answer a user's file with a crash,
//! or the server with a 500. A panic in a library (the PDF renderer, an image decoder) is a
//! finding when it escapes to the target's caller; the readers run those libraries under
//! `catch_unwind` where they are known to panic and turn the panic into a clear error, and
//! such caught panics are counted apart ([`tolerated`]).
//!
//! Own code is told from libraries by the panic's source path: cargo gives workspace crates
//! paths relative to the workspace (`core/src/...`), registry crates and the standard
//! library absolute ones.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

static FINDINGS: AtomicUsize = AtomicUsize::new(0);
static TOLERATED: AtomicUsize = AtomicUsize::new(0);

/// Installs the hook. `abort` (the AFL++ loop): a panic in own code aborts at once, which
/// AFL++ records as a crash even when some `catch_unwind` up the stack would have hidden
/// it. A library's panic that escapes is caught by the loop (or the replay), which
/// reports it.
pub fn install(abort: bool) {
    std::panic::set_hook(Box::new(move |info| {
        let file = info.location().map_or("", |l| l.file());
        if file.starts_with('/') {
            TOLERATED.fetch_add(1, Relaxed);
            if std::env::var_os("OVE_FUZZ_SHOW").is_some() {
                eprintln!("ove-fuzz: library panic (fine if caught): {info}");
            }
            return;
        }
        FINDINGS.fetch_add(1, Relaxed);
        eprintln!("ove-fuzz: panic: {info}");
        if abort {
            std::process::abort();
        }
    }));
}

/// Panics in own code, since the process started.
pub fn findings() -> usize {
    FINDINGS.load(Relaxed)
}

/// Panics in libraries, since the process started (caught ones are not findings).
pub fn tolerated() -> usize {
    TOLERATED.load(Relaxed)
}
