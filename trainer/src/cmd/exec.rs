//! The flags of `ove-train train` and `ove-train bench-train` that choose how a step runs
//! (the same result, other speed and memory): [`crate::decoder::DecoderExec`].

use crate::decoder::{DecoderExec, PackedAttention};

#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// Activation checkpointing: keep only each decoder layer's input in the forward and
    /// run the layer again in the backward (one layer's activations at a time, for about
    /// a third more compute). For long rows that do not fit otherwise.
    #[arg(long)]
    pub checkpoint_layers: bool,
    /// Run the LM head and cross-entropy over at most this many target tokens at a time
    /// (each chunk's backward at once), so the [tokens, vocab] f32 logits never exist
    /// whole. Default: chunks of about 1 GiB of logits (1766 rows at Qwen3's 151,936).
    #[arg(long, value_name = "ROWS")]
    pub loss_chunk_rows: Option<i64>,
    /// How packed rows attend within their samples: auto (varlen flash attention on CUDA
    /// in bf16, a mask elsewhere), mask, or flash (an error where it cannot run).
    #[arg(long, value_enum, default_value = "auto")]
    pub packed_attention: PackedAttention,
    /// Run q/k/v and gate/up each as one GEMM (the weights stacked every forward; still
    /// separate parameters, saved under their own names): fewer, larger kernels on a GPU.
    #[arg(long)]
    pub fuse_projections: bool,
}

impl ExecArgs {
    pub fn exec(&self) -> anyhow::Result<DecoderExec> {
        if let Some(rows) = self.loss_chunk_rows {
            anyhow::ensure!(rows > 0, "--loss-chunk-rows must be positive, not {rows}");
        }
        Ok(DecoderExec {
            packed_attention: self.packed_attention,
            checkpoint_layers: self.checkpoint_layers,
            loss_chunk_rows: self.loss_chunk_rows,
            fuse_projections: self.fuse_projections,
        })
    }
}
