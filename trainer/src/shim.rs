//! What the two halves of the C++ shim (`csrc/c10d_shim.cpp`, `csrc/fused_ops.cpp`) share
//! on the Rust side: tensors cross as `at::Tensor*` (tch's `C_tensor`), errors as a
//! malloc'ed message (`csrc/shim_error.h`).

use std::ffi::{c_char, c_void, CStr};

use tch::Tensor;

/// tch's `C_tensor`: an `at::Tensor*` on the C++ side.
pub(crate) type CTensor = c_void;

extern "C" {
    fn ove_str_free(s: *mut c_char);
}

/// Takes the shim's error message (and frees it).
pub(crate) fn take_error(err: *mut c_char) -> String {
    if err.is_null() {
        return "unknown error".to_string();
    }
    // SAFETY: the shim sets `err` to a malloc'ed NUL-terminated string, freed here once.
    unsafe {
        let s = CStr::from_ptr(err).to_string_lossy().into_owned();
        ove_str_free(err);
        s
    }
}

/// Owned handles of some tensors and their `at::Tensor*` pointers, valid while this lives.
pub(crate) struct Handles {
    _owned: Vec<Tensor>,
    pub(crate) ptrs: Vec<*mut CTensor>,
}

impl Handles {
    pub(crate) fn new<'a>(ts: impl IntoIterator<Item = &'a Tensor>) -> Self {
        let mut owned: Vec<Tensor> = ts.into_iter().map(|t| t.shallow_clone()).collect();
        let ptrs = owned
            .iter_mut()
            .map(|t| t.as_mut_ptr().cast::<CTensor>())
            .collect();
        Self {
            _owned: owned,
            ptrs,
        }
    }
}
