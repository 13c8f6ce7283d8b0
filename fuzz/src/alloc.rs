//! The memory bound of every target: a global allocator that counts live bytes and aborts
//! the process when an input makes its reader hold more than [`MAX_LIVE_BYTES`] at once.
//!
//! A reader that believes a header (an image announcing 10^10 pixels, a tensor of 2^40
//! elements, a tar member of a terabyte) asks for that memory in one allocation; here
//! that is an abort, which AFL++ records as a crash and the replay tests as a failure,
//! instead of the machine swapping or the OOM killer choosing a victim. The abort path
//! allocates nothing: it writes a fixed message and the name of the input being run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

/// Most bytes the process may hold at once while running one input: far above what any
/// target needs for an honest input of the sizes the targets allow (a few megapixels,
/// a megabyte of JSON), far below what a believed header would ask for.
pub const MAX_LIVE_BYTES: usize = 1 << 30;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// The input being run, for the abort message (set by the replay loop).
static CURRENT: Mutex<String> = Mutex::new(String::new());

/// The allocator: [`System`] plus the count.
pub struct Bounded;

fn reserve(n: usize) {
    let now = LIVE.fetch_add(n, Relaxed).saturating_add(n);
    PEAK.fetch_max(now, Relaxed);
    if now > MAX_LIVE_BYTES {
        over(n);
    }
}

fn over(n: usize) -> ! {
    let mut e = std::io::stderr();
    let _ = e.write_all(
        b"ove-fuzz: the reader asked for memory past the bound (MAX_LIVE_BYTES); request of ",
    );
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let _ = e.write_all(&digits[i..]);
    let _ = e.write_all(b" bytes");
    if let Ok(name) = CURRENT.try_lock() {
        if !name.is_empty() {
            let _ = e.write_all(b", input ");
            let _ = e.write_all(name.as_bytes());
        }
    }
    let _ = e.write_all(b"\n");
    std::process::abort()
}

// SAFETY: every call goes to `System` with the caller's arguments; the counters are
// plain atomics and the abort path allocates nothing.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        reserve(layout.size());
        let p = System.alloc(layout);
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        reserve(layout.size());
        let p = System.alloc_zeroed(layout);
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old {
            reserve(new_size - old);
        }
        let p = System.realloc(ptr, layout, new_size);
        if p.is_null() {
            if new_size > old {
                LIVE.fetch_sub(new_size - old, Relaxed);
            }
        } else if new_size < old {
            LIVE.fetch_sub(old - new_size, Relaxed);
        }
        p
    }
}

/// Starts measuring one input: its name for the abort message, the peak reset to now.
pub fn begin(name: &str) {
    if let Ok(mut c) = CURRENT.lock() {
        c.clear();
        c.push_str(name);
    }
    PEAK.store(LIVE.load(Relaxed), Relaxed);
}

/// Bytes held at the peak since [`begin`], above what was live then.
pub fn peak_since(baseline: usize) -> usize {
    PEAK.load(Relaxed).saturating_sub(baseline)
}

/// Bytes live now.
pub fn live() -> usize {
    LIVE.load(Relaxed)
}
