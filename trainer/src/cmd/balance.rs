//! `ove-train balance`: concept balancing of a data set: each image's top-k concepts by
//! cosine similarity of embeddings, sample weights from the concepts' inverse frequency,
//! and samples drawn with replacement by weight, so rare concepts are not drowned by
//! common ones ([`crate::train::balance`] does the work).

use std::path::PathBuf;

use anyhow::Result;
use tch::Device;

use crate::device::parse_device;
use crate::train::balance::run_balance;

/// The arguments of `ove-train balance`.
#[derive(Debug, clap::Args)]
pub struct BalanceArgs {
    /// Image embeddings [N, D] (.npy or .safetensors).
    #[arg(long)]
    pub image_embeddings: PathBuf,
    /// Concept embeddings [C, D] (.npy or .safetensors).
    #[arg(long)]
    pub concept_embeddings: PathBuf,
    /// Concepts per image.
    #[arg(long, default_value_t = 1)]
    pub top_k: usize,
    /// Output weights (.npy).
    #[arg(long)]
    pub out: PathBuf,
    /// Samples to draw (default: as many as images).
    #[arg(long)]
    pub draws: Option<usize>,
    /// Write the drawn image indices here, one per line.
    #[arg(long)]
    pub samples_out: Option<PathBuf>,
    /// Seed of the draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run the similarity search on the first GPU (an error saying why when there is none).
    #[arg(long)]
    pub cuda: bool,
}

impl BalanceArgs {
    /// Writes the weights (and `--samples-out`) and prints the concept entropy before and
    /// after.
    pub fn run(self) -> Result<()> {
        let r = run_balance(
            &self.image_embeddings,
            &self.concept_embeddings,
            self.top_k,
            self.draws,
            self.seed,
            &self.out,
            self.samples_out.as_deref(),
            if self.cuda {
                parse_device("cuda")?
            } else {
                Device::Cpu
            },
        )?;
        println!(
            "{} images, {} concepts ({} used), top-{}: {} drawn",
            r.images, r.concepts, r.concepts_used, r.top_k, r.drawn
        );
        println!(
            "concept entropy before {:.4} nats, after {:.4} (flat: {:.4})",
            r.entropy_before, r.entropy_after, r.entropy_max
        );
        println!("weights written to {}", self.out.display());
        Ok(())
    }
}
