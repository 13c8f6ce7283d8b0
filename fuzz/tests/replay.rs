//! Every target over its saved corpus (`fuzz/corpus/TARGET`, grown by AFL++ and minimised
//! by `bench/fuzz.sh`) and every crash or hang ever found (`fuzz/regressions/TARGET`), as
//! ordinary tests: no panic, memory under the bound (else the process aborts, naming the
//! input), and each input done within the hang bound.

use std::path::PathBuf;
use std::sync::Mutex;

use ove_fuzz::{alloc, fixtures, panics, replay_one, Target, HANG_BOUND};

/// One target at a time: the allocator's peak is process-wide.
static SERIAL: Mutex<()> = Mutex::new(());

fn inputs(kind: &str, t: Target) -> Vec<PathBuf> {
    let dir = fixtures::fuzz_dir().join(kind).join(t.name());
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable corpus folder").path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    v.sort();
    v
}

fn replay(t: Target) {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    panics::install(false);
    let corpus = inputs("corpus", t);
    let regressions = inputs("regressions", t);
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{} is empty: bench/fuzz.sh saves each target's corpus there",
        t.name()
    );
    let before = panics::findings();
    let (mut slowest, mut most) = ((0.0f64, String::new()), (0usize, String::new()));
    for path in corpus.iter().chain(&regressions) {
        let data = std::fs::read(path).expect("a readable input");
        let name = path.display().to_string();
        let r = replay_one(t, &name, &data);
        let (took, peak) = (r.took, r.peak_bytes);
        assert!(!r.panicked, "{name}: the target panicked");
        assert_eq!(
            panics::findings(),
            before,
            "{name}: a panic (caught on the way)"
        );
        assert!(
            took < HANG_BOUND,
            "{name}: took {took:?}, past the hang bound"
        );
        if took.as_secs_f64() > slowest.0 {
            slowest = (took.as_secs_f64(), name.clone());
        }
        if peak > most.0 {
            most = (peak, name);
        }
    }
    println!(
        "{}: {} corpus inputs, {} regressions; slowest {:.3} s ({}), most memory {:.1} MiB ({})",
        t.name(),
        corpus.len(),
        regressions.len(),
        slowest.0,
        slowest.1,
        most.0 as f64 / (1 << 20) as f64,
        most.1
    );
}

#[test]
fn jpeg() {
    replay(Target::Jpeg);
}

#[test]
fn preprocess() {
    replay(Target::Preprocess);
}

#[test]
fn pdf() {
    replay(Target::Pdf);
}

#[test]
fn configs() {
    replay(Target::Configs);
}

#[test]
fn safetensors() {
    replay(Target::Safetensors);
}

#[test]
fn manifest() {
    replay(Target::Manifest);
}

#[test]
fn onnx() {
    replay(Target::Onnx);
}

#[test]
fn tokenizer() {
    replay(Target::Tokenizer);
}

#[test]
fn train_data() {
    replay(Target::TrainData);
}

#[test]
fn serve() {
    replay(Target::Serve);
}

/// The replay can fail: an input that believes a header past the bound aborts the
/// process (checked in a child process, since the abort ends it), and the hang and panic
/// checks run on every input above.
#[test]
fn an_input_over_the_memory_bound_aborts_naming_it() {
    if std::env::var_os("OVE_FUZZ_ABORT_CHILD").is_some() {
        alloc::begin("the-test-input");
        let v: Vec<u8> = Vec::with_capacity(alloc::MAX_LIVE_BYTES + 1);
        std::hint::black_box(&v);
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "an_input_over_the_memory_bound_aborts_naming_it",
            "--exact",
            "--nocapture",
        ])
        .env("OVE_FUZZ_ABORT_CHILD", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the child survived: {err}");
    assert!(
        err.contains("past the bound") && err.contains("the-test-input"),
        "{err}"
    );
}
