//! Rescaling and normalisation of 8-bit values, in the reference's precision.
//!
//! transformers does `rescale` as `(uint8 as float64) * rescale_factor` and then casts
//! to float32; `normalize` then computes `(x - mean) / std` in float32, with `mean` and
//! `std` cast to float32 first. Doing the same operations in the same types gives the
//! same bits. Since a channel value is one of 256 bytes, the whole computation is a
//! 3 x 256 lookup table.

use crate::config::PreprocessorConfig;

/// Normalised value of every byte, per channel: `table[c][v]`.
pub struct NormalizeTable {
    table: [[f32; 256]; 3],
}

impl NormalizeTable {
    /// Builds the table from the config's `do_rescale`, `rescale_factor`, `do_normalize`,
    /// `image_mean` and `image_std`.
    pub fn new(cfg: &PreprocessorConfig) -> Self {
        let mut table = [[0f32; 256]; 3];
        for (c, row) in table.iter_mut().enumerate() {
            for (v, out) in row.iter_mut().enumerate() {
                let mut x = if cfg.do_rescale {
                    (v as f64 * cfg.rescale_factor) as f32
                } else {
                    v as f32
                };
                if cfg.do_normalize {
                    x = (x - cfg.image_mean[c]) / cfg.image_std[c];
                }
                *out = x;
            }
        }
        Self { table }
    }

    /// The value of byte `v` in channel `c`.
    #[inline]
    pub fn get(&self, c: usize, v: u8) -> f32 {
        self.table[c][v as usize]
    }
}
