//! Weight pages ONNX Runtime has mapped from the bundle but no longer needs resident.
//!
//! ONNX Runtime (1.32, CPU provider) maps each external initializer of a graph from its
//! `.onnx.data` file (a private mapping per tensor) when it creates the session. Then
//! `MatMulNBits` (every int4 matrix, the lm_head too) packs its weight into a buffer of its
//! own (with the int8 kernel on x86: codes, f32 scales and block sums, about 0.75 bytes a
//! weight against 0.625 in the file) and ONNX Runtime unmaps the int4 codes; the f32 scales,
//! copied into the packed buffer too, are reported "not packed" and stay mapped for the
//! session's life, every page resident since packing read them. The heap copy is the floor:
//! about 1.2x the decoder weights, the KV cache and the libraries come on top.
//!
//! Measured (`ove bench --backend ort --threads 2 --text-tokens 128 --decode-tokens 64
//! --max-context 200`, `ove export --int4` bundles of random Qwen3 weights, small vision
//! tower): at the Qwen3-0.6B shape (355 MiB of decoder weights) the decoder data file held
//! 71 MiB of resident scale pages for the whole run and up to 145 MiB at the end of the load
//! (the lm_head's 74 MiB of codes being packed, and the scales); peak RSS 676 MiB (1.90x).
//! With [`Trimmer`]: 598 MiB (1.68x). At the Qwen3-1.7B shape (1026 MiB): 1712 MiB (1.67x)
//! before, 1428 MiB (1.39x) with it; what is left is ONNX Runtime's packed weights (about
//! 1230 MiB), the KV cache (44 MiB in f32 at 200 slots), activations and the libraries.
//!
//! [`Trimmer`] pages these mappings out while a session is created (every
//! [`TRIM_INTERVAL`]) and once more when it is made, so the peak never holds them:
//! `madvise(MADV_PAGEOUT)` on this process's mappings of the graph's data files, as
//! /proc/self/maps lists them. Results cannot change: a page read again is faulted back in
//! with the same bytes (from the page cache, or the file when the kernel dropped it), and
//! MADV_PAGEOUT never discards data: unlike MADV_DONTNEED it is safe even when a listed range
//! has been unmapped and reused for other memory (ONNX Runtime frees codes and allocates
//! packed buffers while the trimmer runs), since anonymous memory is only ever swapped, never
//! dropped. The cost: pages it evicts from the page cache are read from disk by the next
//! load (at 0.6B, 140 of the data file's 355 MiB were no longer cached after a run). The
//! kernel pages out file pages only for a user who owns the file or may write it (Linux
//! 5.4+); otherwise the advice does nothing and the pages stay, as before.
//!
//! `OVE_ORT_TRIM=off` (or `0`) switches it off. Linux only; elsewhere it does nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How often the mapped weight pages are paged out while a session is created: the most a
/// load holds resident beyond the packed weights is what it reads in this long (at 100 ms a
/// fast load packed the 0.6B lm_head between two passes, and one run peaked 26 MiB higher).
/// A pass reads /proc/self/maps and advises the ranges it lists.
pub(super) const TRIM_INTERVAL: Duration = Duration::from_millis(20);

/// The environment variable that switches the trimming off (`off` or `0`).
pub const TRIM_ENV: &str = "OVE_ORT_TRIM";

/// One mapping of a file, as a /proc/PID/maps (or smaps) header line describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FileMapping {
    pub start: usize,
    pub end: usize,
    pub path: PathBuf,
}

/// The mappings of `files` in a /proc/PID/maps or smaps text: a line per mapping,
/// `start-end perms offset dev inode [path]` (smaps adds `Key: value kB` lines, skipped).
/// Paths are compared as the kernel writes them (resolved); callers pass canonical paths.
pub(super) fn file_mappings(maps: &str, files: &[PathBuf]) -> Vec<FileMapping> {
    maps.lines()
        .filter_map(header)
        .filter(|(_, _, path)| files.iter().any(|f| f.as_path() == *path))
        .map(|(start, end, path)| FileMapping {
            start,
            end,
            path: path.to_path_buf(),
        })
        .collect()
}

/// `start-end perms offset dev inode path` -> (start, end, path); `None` for any other line
/// (smaps' `Key: value` lines, and mappings with no path or a pseudo-path like `[heap]`).
fn header(line: &str) -> Option<(usize, usize, &Path)> {
    let mut rest = line;
    let mut fields = [""; 5];
    for f in &mut fields {
        rest = rest.trim_start();
        let end = rest.find(char::is_whitespace)?;
        *f = &rest[..end];
        rest = &rest[end..];
    }
    let (a, b) = fields[0].split_once('-')?;
    let start = usize::from_str_radix(a, 16).ok()?;
    let end = usize::from_str_radix(b, 16).ok()?;
    // The permissions field is four characters (`rw-p`, `r--s`); a key line has none.
    if fields[1].len() != 4 || end <= start {
        return None;
    }
    let path = rest.trim();
    path.starts_with('/')
        .then_some((start, end, Path::new(path)))
}

/// Whether `OVE_ORT_TRIM` leaves the trimming on.
fn enabled() -> bool {
    !std::env::var(TRIM_ENV).is_ok_and(|v| v == "off" || v == "0")
}

/// Pages out this process's mappings of `files` (canonical paths); returns how many
/// mappings were advised. A failure is a warning (once per [`Trimmer`], via `warned`): the
/// pages then simply stay resident.
fn page_out(files: &[PathBuf], warned: &mut bool) -> usize {
    let maps = match std::fs::read_to_string("/proc/self/maps") {
        Ok(s) => s,
        Err(e) => {
            if !std::mem::replace(warned, true) {
                tracing::warn!("cannot read /proc/self/maps ({e}); weight pages stay resident");
            }
            return 0;
        }
    };
    let mut n = 0;
    for m in file_mappings(&maps, files) {
        match advise_page_out(m.start, m.end - m.start) {
            Ok(()) => n += 1,
            // ENOMEM: the range was unmapped since maps was read (ONNX Runtime released it).
            Err(e) if e.kind() == std::io::ErrorKind::OutOfMemory => {}
            Err(e) => {
                if !std::mem::replace(warned, true) {
                    tracing::warn!(
                        "{}: cannot page out its mapped weights ({e}); they stay resident",
                        m.path.display()
                    );
                }
            }
        }
    }
    n
}

#[cfg(target_os = "linux")]
fn advise_page_out(start: usize, len: usize) -> std::io::Result<()> {
    // SAFETY: MADV_PAGEOUT changes no memory contents whatever the range holds now (see the
    // module docs): file pages are read back on the next access, anonymous ones swapped.
    let r = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_PAGEOUT) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_page_out(_start: usize, _len: usize) -> std::io::Result<()> {
    Ok(())
}

/// `VmRSS` of this process in KiB (for the debug line).
fn rss_kib() -> Option<u64> {
    crate::bench::status_kib("VmRSS:")
}

/// Pages out the mappings of a graph's data files while its session is created (a thread,
/// every [`TRIM_INTERVAL`]) and once more when dropped, after the session is made.
pub(super) struct Trimmer {
    label: String,
    files: Vec<PathBuf>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<bool>>,
}

impl Trimmer {
    /// Starts trimming the mappings of `files` (a graph's external data files); `label`
    /// names the graph in log lines. Does nothing when switched off, off Linux, or for a
    /// graph without external data.
    pub(super) fn start(label: &str, files: &[PathBuf]) -> Self {
        let files: Vec<PathBuf> = if cfg!(target_os = "linux") && enabled() {
            files.iter().filter_map(|f| f.canonicalize().ok()).collect()
        } else {
            Vec::new()
        };
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = if files.is_empty() {
            None
        } else {
            let (files, stop) = (files.clone(), stop.clone());
            std::thread::Builder::new()
                .name("ove-trim".into())
                .spawn(move || {
                    let mut warned = false;
                    let (lock, cv) = &*stop;
                    let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                    while !*stopped {
                        stopped = cv
                            .wait_timeout(stopped, TRIM_INTERVAL)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                        if !*stopped {
                            page_out(&files, &mut warned);
                        }
                    }
                    warned
                })
                .map_err(|e| tracing::warn!("{label}: cannot start the page trimmer ({e})"))
                .ok()
        };
        Self {
            label: label.to_string(),
            files,
            stop,
            thread,
        }
    }
}

impl Drop for Trimmer {
    fn drop(&mut self) {
        if self.files.is_empty() {
            return;
        }
        {
            let (lock, cv) = &*self.stop;
            *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
            cv.notify_all();
        }
        let mut warned = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or(false);
        let before = rss_kib();
        let n = page_out(&self.files, &mut warned);
        if let (Some(a), Some(b)) = (before, rss_kib()) {
            tracing::debug!(
                "{}: paged out {n} weight mappings, RSS {} -> {} MiB",
                self.label,
                a / 1024,
                b / 1024
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 fd:01 1234                       /usr/bin/ove
Size:               1024 kB
Rss:                 512 kB
7f0000000000-7f0000400000 rw-p 00001000 fd:01 99                         /b/decoder_ort.onnx.data
Size:               4096 kB
KernelPageSize:        4 kB
Rss:                3000 kB
7f0000400000-7f0000500000 rw-p 00000000 00:00 0 
Rss:                1024 kB
7f0000500000-7f0000600000 rw-p 00500000 fd:01 99                         /b/decoder_ort.onnx.data
Rss:                  64 kB
7f0000600000-7f0000700000 r--s 00000000 fd:01 77                         /b/with space.onnx.data
Rss:                  12 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                  20 kB
";

    #[test]
    fn finds_the_mappings_of_the_files() {
        let files = [
            PathBuf::from("/b/decoder_ort.onnx.data"),
            PathBuf::from("/b/with space.onnx.data"),
        ];
        let m = file_mappings(SMAPS, &files);
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!(
            m[0],
            FileMapping {
                start: 0x7f00_0000_0000,
                end: 0x7f00_0040_0000,
                path: files[0].clone(),
            }
        );
        assert_eq!((m[1].start, m[1].end), (0x7f00_0050_0000, 0x7f00_0060_0000));
        assert_eq!(m[2].path, files[1]);
        assert!(file_mappings(SMAPS, &[PathBuf::from("/b/other.data")]).is_empty());
        assert!(file_mappings(SMAPS, &[PathBuf::from("/b/decoder_ort.onnx")]).is_empty());
    }

    #[test]
    fn key_lines_and_pathless_mappings_are_not_mappings_of_files() {
        assert_eq!(header("Rss:                 512 kB"), None);
        assert_eq!(
            header("7f0000400000-7f0000500000 rw-p 00000000 00:00 0 "),
            None
        );
        assert_eq!(
            header("7ffd0000-7ffd1000 rw-p 00000000 00:00 0   [stack]"),
            None
        );
        assert_eq!(header("20-10 r--p 0 fd:01 5 /x"), None);
        assert_eq!(
            header("10-20 r--p 0 fd:01 5 /x y"),
            Some((0x10, 0x20, Path::new("/x y")))
        );
    }

    /// Resident KiB of this process's mappings of `path`, from /proc/self/smaps.
    fn resident_kib(path: &Path) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let path = path.canonicalize().unwrap();
        let (mut inside, mut kib) = (false, 0);
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if first.contains('-') && !first.ends_with(':') {
                inside = header(line).is_some_and(|(_, _, p)| p == path);
            } else if let Some(v) = line.strip_prefix("Rss:").filter(|_| inside) {
                kib += v
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap();
            }
        }
        kib
    }

    /// A file mapped and read here loses its resident pages to the trimmer and reads back
    /// the same bytes.
    #[cfg(target_os = "linux")]
    #[test]
    fn trimmed_pages_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        // tmpfs pages are memory, not file pages the kernel can drop: nothing to test there.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        let c = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C path and a statfs buffer to fill.
        if unsafe { libc::statfs(c.as_ptr(), &mut fs) } != 0 || fs.f_type as i64 == 0x0102_1994 {
            return;
        }
        let path = dir.path().join("w.onnx.data");
        let bytes: Vec<u8> = (0..(4usize << 20)).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: a private map of a file nothing writes while it is mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        assert_eq!(&map[..], &bytes[..]);
        if !enabled() {
            return;
        }
        assert!(resident_kib(&path) >= 4000, "the map was read");
        // Started and stopped at once: the pass at drop does the work.
        drop(Trimmer::start("test", std::slice::from_ref(&path)));
        let left = resident_kib(&path);
        assert!(left < 1024, "{left} KiB still resident");
        assert_eq!(&map[..], &bytes[..]);
        // And the thread pages out on its own while it runs.
        assert!(resident_kib(&path) >= 4000);
        let t = Trimmer::start("test", std::slice::from_ref(&path));
        std::thread::sleep(TRIM_INTERVAL * 4);
        let left = resident_kib(&path);
        drop(t);
        assert!(left < 1024, "{left} KiB still resident");
        assert_eq!(&map[..], &bytes[..]);
    }
}
