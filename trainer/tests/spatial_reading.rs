//! The image path carries *where* things are, in reading order, all the way to the loss.
//!
//! A colour can be learned from any summary of an image; reading needs every patch to
//! reach the decoder in its place. Here the golden model is trained from its random
//! weights on pictures of a 4 x 6 grid of black and white cells, one cell per 14 px patch,
//! and answers the cells row by row ("dark" / "light" token per cell). The pictures go
//! through the real preprocessing (resize, normalisation, merge-window patch order), the
//! vision encoder's 2-D positions, the 2 x 2 merger and the decoder. Every step draws new
//! grids, so the final check on fresh grids measures reading, not memory: the model has to
//! tell the 24 patches apart by position. Patches that share a position, position ids that
//! lost a row or column, or image embeddings put on the pads in an order that changes from
//! picture to picture leave the accuracy near chance (50%).

mod common;

use image::{Rgb, RgbImage};
use ove_core::config::PreprocessorConfig;
use ove_core::preprocess::preprocess;
use ove_train::checkpoint::load_model;
use ove_train::train::stage::set_trainable;
use ove_train::train::{pack, train_step, AdamW, AdamWConfig, Sample};
use tch::{Device, Kind};

const ROWS: usize = 4;
const COLS: usize = 6;
const CELL: u32 = 14;
/// Token ids of the answers (any two text ids of the golden vocabulary).
const DARK: i64 = 100;
const LIGHT: i64 = 101;
const BOS: i64 = 1;

/// A small deterministic generator (no rand dependency in the trainer's tests).
struct Lcg(u64);
impl Lcg {
    fn bit(&mut self) -> bool {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) & 1 == 1
    }
}

/// One grid: the picture's sample (prompt `BOS, pads..., BOS`, then one token per cell)
/// and the cells.
fn grid_sample(rng: &mut Lcg, pre: &PreprocessorConfig, image_token: i64) -> (Sample, Vec<i64>) {
    let cells: Vec<bool> = (0..ROWS * COLS).map(|_| rng.bit()).collect();
    let img = RgbImage::from_fn(COLS as u32 * CELL, ROWS as u32 * CELL, |x, y| {
        let dark = cells[(y / CELL) as usize * COLS + (x / CELL) as usize];
        let v = if dark { 20 } else { 235 };
        Rgb([v, v, v])
    });
    let p = preprocess(&img, pre).unwrap();
    assert_eq!(
        p.grid_thw,
        [1, ROWS, COLS],
        "the picture must not be resized"
    );
    let merged = ROWS * COLS / 4;
    let answer: Vec<i64> = cells
        .iter()
        .map(|&d| if d { DARK } else { LIGHT })
        .collect();
    let mut ids = vec![BOS];
    ids.extend(std::iter::repeat_n(image_token, merged));
    ids.push(BOS);
    let prompt_len = ids.len();
    ids.extend(&answer);
    let supervised: Vec<bool> = (0..ids.len()).map(|t| t >= prompt_len).collect();
    let sample = Sample::new(ids, &supervised, p.pixel_values, vec![p.grid_thw]).unwrap();
    (sample, answer)
}

#[test]
fn learns_to_read_a_grid_in_order() {
    let ckpt = common::golden().join("two-images/checkpoint");
    let l = load_model(&ckpt, Device::Cpu).unwrap();
    let pre = PreprocessorConfig::from_file(&ckpt.join("preprocessor_config.json")).unwrap();
    let image_token = l.model.config.image_token_id;
    set_trainable(&l.vs, &["all".to_string()]).unwrap();
    let mut opt = AdamW::new(&l.vs, AdamWConfig::default());
    let mut rng = Lcg(7);

    let accuracy = |rng: &mut Lcg| -> f64 {
        let (mut right, mut total) = (0i64, 0i64);
        for _ in 0..16 {
            let (s, answer) = grid_sample(rng, &pre, image_token);
            let b = pack(std::slice::from_ref(&s), Device::Cpu).unwrap();
            let logits = tch::no_grad(|| {
                l.model
                    .forward(&b.input_ids, b.images().as_ref(), None, &b.mask())
                    .unwrap()
            });
            // Teacher-forced prediction of each cell: the logit of DARK against LIGHT at the
            // position before it.
            let n = s.len() as i64;
            let k = answer.len() as i64;
            let at = logits.get(0).narrow(0, n - k - 1, k);
            let dark = at.select(1, DARK);
            let light = at.select(1, LIGHT);
            let said: Vec<bool> =
                Vec::<bool>::try_from(dark.gt_tensor(&light).to_kind(Kind::Bool)).unwrap();
            for (said_dark, want) in said.iter().zip(&answer) {
                right += (*said_dark == (*want == DARK)) as i64;
                total += 1;
            }
        }
        right as f64 / total as f64
    };

    let before = accuracy(&mut rng);
    let mut last = 0.0;
    // 800 steps of 8 grids: about 12 s here. The seed is fixed (Lcg(7) above, with the golden
    // weights the run is the same every time on the CPU) and reaches 0.992 (measured); seeds
    // 1-4 reach 0.945-0.99 after 600 steps, so the 0.95 bar holds for this seed with margin
    // and would catch a model that stops learning the order, not a different draw.
    for _ in 0..800 {
        let samples: Vec<Sample> = (0..8)
            .map(|_| grid_sample(&mut rng, &pre, image_token).0)
            .collect();
        let batch = pack(&samples, Device::Cpu).unwrap();
        last = train_step(&l.model, &mut opt, std::slice::from_ref(&batch), 2e-3, 1.0)
            .unwrap()
            .loss;
    }
    let after = accuracy(&mut rng);
    println!("cell accuracy on fresh grids {before:.3} -> {after:.3} (last loss {last:.4})");
    assert!(after >= 0.95, "cell accuracy {after:.3} (from {before:.3})");
}
