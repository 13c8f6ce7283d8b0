//! Samples and packed rows.
//!
//! A [`Sample`] is one tokenized conversation (image pads already expanded) with its
//! targets and its images. [`pack`] concatenates samples into one row that trains exactly
//! as the samples would one by one: attention is block-diagonal causal (no sample sees
//! another), positions restart at 0 for each sample, and each image attends only to
//! itself in the vision encoder (images are grouped per sample, see
//! [`crate::vision::RiceVit::forward_grouped`]).

use anyhow::{ensure, Result};
use tch::{Device, Tensor};

use crate::decoder::AttentionMask;
use crate::model::Images;
use crate::train::loss::IGNORE_INDEX;

/// One training sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub input_ids: Vec<i64>,
    /// `targets[t]`: the token position `t` must predict, or [`IGNORE_INDEX`].
    pub targets: Vec<i64>,
    /// Row-major `[P, patch_dim]` patches of the sample's images, in prompt order.
    pub pixel_values: Vec<f32>,
    pub grids: Vec<[usize; 3]>,
}

impl Sample {
    /// A sample whose trained tokens are those with `supervised[t]` (e.g. the assistant's
    /// reply and its end-of-turn token): position `t` predicts `input_ids[t + 1]` when
    /// `supervised[t + 1]`; the last position predicts nothing.
    pub fn new(
        input_ids: Vec<i64>,
        supervised: &[bool],
        pixel_values: Vec<f32>,
        grids: Vec<[usize; 3]>,
    ) -> Result<Self> {
        ensure!(
            supervised.len() == input_ids.len(),
            "supervised mask has {} entries for {} tokens",
            supervised.len(),
            input_ids.len()
        );
        let targets = (0..input_ids.len())
            .map(|t| match supervised.get(t + 1) {
                Some(true) => input_ids[t + 1],
                _ => IGNORE_INDEX,
            })
            .collect();
        Ok(Self {
            input_ids,
            targets,
            pixel_values,
            grids,
        })
    }

    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// Number of positions with a target.
    pub fn num_targets(&self) -> usize {
        self.targets.iter().filter(|&&t| t != IGNORE_INDEX).count()
    }
}

/// Several samples in one row, ready for the model.
#[derive(Debug)]
pub struct PackedBatch {
    /// `[1, T]`.
    pub input_ids: Tensor,
    /// `[1, T]`, [`IGNORE_INDEX`] where nothing is trained.
    pub targets: Tensor,
    /// `[1, T]`: 0.. within each sample.
    pub positions: Tensor,
    /// `[1, T]`: which sample each position belongs to.
    pub sample_ids: Tensor,
    /// `[P, patch_dim]` patches of all images, sample by sample; `None` without images.
    pub pixel_values: Option<Tensor>,
    pub grids: Vec<[usize; 3]>,
    /// Images per sample that has any, in order.
    pub group_sizes: Vec<usize>,
    pub num_samples: usize,
    pub num_targets: i64,
}

impl PackedBatch {
    /// Plain causal attention for one sample, block-diagonal causal for several.
    pub fn mask(&self) -> AttentionMask {
        if self.num_samples == 1 {
            AttentionMask::Causal
        } else {
            AttentionMask::Packed(self.sample_ids.shallow_clone())
        }
    }

    pub fn images(&self) -> Option<Images<'_>> {
        self.pixel_values.as_ref().map(|pv| Images {
            pixel_values: pv,
            grids: &self.grids,
            group_sizes: Some(&self.group_sizes),
        })
    }

    pub fn len(&self) -> usize {
        self.input_ids.size()[1] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Packs `samples` into one row (see the module docs).
pub fn pack(samples: &[Sample], device: Device) -> Result<PackedBatch> {
    ensure!(!samples.is_empty(), "nothing to pack");
    let mut ids = Vec::new();
    let mut targets = Vec::new();
    let mut positions = Vec::new();
    let mut sample_ids = Vec::new();
    let mut pixels = Vec::new();
    let mut grids = Vec::new();
    let mut group_sizes = Vec::new();
    let mut patch_dim = None;
    for (i, s) in samples.iter().enumerate() {
        ensure!(!s.is_empty(), "sample {i} is empty");
        ensure!(
            s.targets.len() == s.input_ids.len(),
            "sample {i}: {} targets for {} tokens",
            s.targets.len(),
            s.input_ids.len()
        );
        ids.extend_from_slice(&s.input_ids);
        targets.extend_from_slice(&s.targets);
        positions.extend(0..s.len() as i64);
        sample_ids.extend(std::iter::repeat_n(i as i64, s.len()));
        if !s.grids.is_empty() {
            let patches: usize = s.grids.iter().map(|g| g.iter().product::<usize>()).sum();
            ensure!(
                patches > 0 && s.pixel_values.len() % patches == 0,
                "sample {i}: {} pixel values do not fit {patches} patches",
                s.pixel_values.len()
            );
            let dim = s.pixel_values.len() / patches;
            ensure!(
                *patch_dim.get_or_insert(dim) == dim,
                "sample {i}: patch width {dim} differs from the other samples'"
            );
            pixels.extend_from_slice(&s.pixel_values);
            grids.extend_from_slice(&s.grids);
            group_sizes.push(s.grids.len());
        }
    }
    let row = |v: &[i64]| Tensor::from_slice(v).to_device(device).unsqueeze(0);
    let pixel_values = patch_dim.map(|dim| {
        Tensor::from_slice(&pixels)
            .reshape([-1, dim as i64])
            .to_device(device)
    });
    let num_targets = targets.iter().filter(|&&t| t != IGNORE_INDEX).count() as i64;
    Ok(PackedBatch {
        input_ids: row(&ids),
        targets: row(&targets),
        positions: row(&positions),
        sample_ids: row(&sample_ids),
        pixel_values,
        grids,
        group_sizes,
        num_samples: samples.len(),
        num_targets,
    })
}

/// Groups sample lengths into bins of at most `capacity` tokens, first-fit over the
/// lengths sorted longest first (samples longer than `capacity` are left out and
/// returned separately). Returns `(bins of sample indices, dropped indices)`.
pub fn plan_bins(lengths: &[usize], capacity: usize) -> (Vec<Vec<usize>>, Vec<usize>) {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    let mut bins: Vec<(usize, Vec<usize>)> = Vec::new();
    let mut dropped = Vec::new();
    for i in order {
        let len = lengths[i];
        if len > capacity {
            dropped.push(i);
            continue;
        }
        match bins.iter_mut().find(|(used, _)| used + len <= capacity) {
            Some((used, members)) => {
                *used += len;
                members.push(i);
            }
            None => bins.push((len, vec![i])),
        }
    }
    (bins.into_iter().map(|(_, m)| m).collect(), dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_follow_the_supervised_mask() {
        let s = Sample::new(
            vec![1, 2, 3, 4],
            &[false, false, true, true],
            vec![],
            vec![],
        )
        .unwrap();
        assert_eq!(s.targets, vec![IGNORE_INDEX, 3, 4, IGNORE_INDEX]);
        assert_eq!(s.num_targets(), 2);
    }

    #[test]
    fn packing_restarts_positions_and_groups_images() {
        let a = Sample::new(
            vec![5, 6, 7],
            &[false, true, true],
            vec![0.5; 8],
            vec![[1, 2, 2]],
        )
        .unwrap();
        let b = Sample::new(vec![8, 9], &[false, true], vec![], vec![]).unwrap();
        let p = pack(&[a, b], Device::Cpu).unwrap();
        assert_eq!(
            Vec::<i64>::try_from(p.positions.flatten(0, -1)).unwrap(),
            [0, 1, 2, 0, 1]
        );
        assert_eq!(
            Vec::<i64>::try_from(p.sample_ids.flatten(0, -1)).unwrap(),
            [0, 0, 0, 1, 1]
        );
        assert_eq!(
            Vec::<i64>::try_from(p.targets.flatten(0, -1)).unwrap(),
            [6, 7, IGNORE_INDEX, 9, IGNORE_INDEX]
        );
        assert_eq!(p.group_sizes, vec![1]);
        assert_eq!(p.pixel_values.unwrap().size(), [4, 2]);
        assert_eq!(p.num_targets, 3);
    }

    #[test]
    fn bins_respect_the_capacity() {
        let (bins, dropped) = plan_bins(&[5, 9, 3, 12, 4, 1], 10);
        assert_eq!(dropped, vec![3]);
        for b in &bins {
            assert!(b.iter().map(|&i| [5, 9, 3, 12, 4, 1][i]).sum::<usize>() <= 10);
        }
        let mut all: Vec<usize> = bins.concat();
        all.sort();
        assert_eq!(all, vec![0, 1, 2, 4, 5]);
    }
}
