//! The external data file of one graph (`vision.onnx.data`, `decoder.onnx.data`):
//! initializer bytes appended tensor by tensor, each starting on a 64-byte boundary so
//! that a runtime mapping the file can use the weights in place with aligned loads.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Alignment of every tensor's first byte in the data file.
pub const ALIGN: u64 = 64;

pub struct DataFile {
    path: PathBuf,
    /// The file name, as written in each initializer's `location` (relative to the model).
    location: String,
    out: BufWriter<File>,
    len: u64,
}

impl DataFile {
    /// Creates `dir/location`.
    pub fn create(dir: &Path, location: &str) -> Result<Self> {
        let path = dir.join(location);
        let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self {
            path,
            location: location.to_string(),
            out: BufWriter::with_capacity(1 << 20, f),
            len: 0,
        })
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// Appends one tensor's bytes; returns its (offset, length).
    pub fn append(&mut self, bytes: &[u8]) -> Result<(u64, u64)> {
        let pad = (ALIGN - self.len % ALIGN) % ALIGN;
        let io = |e| anyhow::Error::new(e).context(format!("writing {}", self.path.display()));
        self.out
            .write_all(&[0u8; ALIGN as usize][..pad as usize])
            .map_err(io)?;
        let offset = self.len + pad;
        self.out.write_all(bytes).map_err(io)?;
        self.len = offset + bytes.len() as u64;
        Ok((offset, bytes.len() as u64))
    }

    /// Flushes and syncs the file; returns its length.
    pub fn finish(self) -> Result<u64> {
        let f = self
            .out
            .into_inner()
            .map_err(|e| anyhow::anyhow!("writing {}: {}", self.path.display(), e.error()))?;
        f.sync_all()
            .with_context(|| format!("writing {}", self.path.display()))?;
        Ok(self.len)
    }
}
