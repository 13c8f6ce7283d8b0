//! Small page rotation: estimate, and the deskewed frame lines are grouped in.
//!
//! A page photographed or scanned a little askew has lines that climb or fall across it;
//! grouping characters by height then fails at the far end of long lines. The angle is the
//! one at which the centres of the core components, projected across the page, pile up most
//! sharply: the sum of squares of their projection profile (1-pixel bins, linear binning,
//! weighted by component width) is largest. A coarse search over the allowed range, then a
//! fine one around its best; O(components) per angle. A page whose profile is not clearly
//! sharper at some angle than level is taken as level.
//!
//! Components keep their original boxes (the reported line boxes are axis-aligned boxes in
//! the original image); only the coordinates used for grouping are rotated, by [`Frame`].

use super::components::Comp;

/// Coarse and fine search steps, in degrees.
const COARSE_STEP: f32 = 0.2;
const FINE_STEP: f32 = 0.02;

/// The skew angle in degrees (positive: lines descend to the right), within `max_degrees`.
pub(crate) fn estimate(core: &[Comp], max_degrees: f32) -> f32 {
    if core.len() < 3 || max_degrees <= 0.0 || !max_degrees.is_finite() {
        return 0.0;
    }
    let pts: Vec<(f32, f32, f32)> = core
        .iter()
        .map(|c| (c.cx(), c.cy(), c.w().min(3 * c.h()) as f32))
        .collect();
    let mut bins = Vec::new();
    let level = profile_score(&pts, 0.0, &mut bins);
    let mut best = (0.0f32, level);
    let steps = (max_degrees / COARSE_STEP).floor() as i32;
    for i in -steps..=steps {
        let a = i as f32 * COARSE_STEP;
        let s = profile_score(&pts, a, &mut bins);
        if s > best.1 {
            best = (a, s);
        }
    }
    let centre = best.0;
    let fine = (COARSE_STEP / FINE_STEP).round() as i32;
    for i in -fine..=fine {
        let a = (centre + i as f32 * FINE_STEP).clamp(-max_degrees, max_degrees);
        let s = profile_score(&pts, a, &mut bins);
        if s > best.1 {
            best = (a, s);
        }
    }
    if best.1 <= level * 1.02 {
        0.0
    } else {
        best.0
    }
}

/// Sum of squares of the profile of `pts` (x, y, weight) projected across lines at `degrees`.
fn profile_score(pts: &[(f32, f32, f32)], degrees: f32, bins: &mut Vec<f32>) -> f64 {
    let (s, c) = degrees.to_radians().sin_cos();
    let proj = |x: f32, y: f32| y * c - x * s;
    let (mut lo, mut hi) = (f32::MAX, f32::MIN);
    for &(x, y, _) in pts {
        let p = proj(x, y);
        lo = lo.min(p);
        hi = hi.max(p);
    }
    bins.clear();
    bins.resize((hi - lo) as usize + 2, 0.0);
    for &(x, y, w) in pts {
        let p = proj(x, y) - lo;
        let i = p as usize;
        let f = p - i as f32;
        bins[i] += w * (1.0 - f);
        bins[i + 1] += w * f;
    }
    bins.iter().map(|&b| b as f64 * b as f64).sum()
}

/// Rotation about the page centre that levels lines skewed by the estimated angle.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame {
    sin: f32,
    cos: f32,
    cx: f32,
    cy: f32,
}

impl Frame {
    pub fn new(degrees: f32, width: f32, height: f32) -> Self {
        let (sin, cos) = degrees.to_radians().sin_cos();
        Frame {
            sin,
            cos,
            cx: width * 0.5,
            cy: height * 0.5,
        }
    }

    /// `(x, y)` in the deskewed frame.
    pub fn level(&self, x: f32, y: f32) -> (f32, f32) {
        let (dx, dy) = (x - self.cx, y - self.cy);
        (
            self.cx + dx * self.cos + dy * self.sin,
            self.cy - dx * self.sin + dy * self.cos,
        )
    }

    /// Width and height of a component before it was rotated (its box grows with the
    /// rotation: a long thin shape gains height), at least 1.
    pub fn unrotated_size(&self, c: &Comp) -> (f32, f32) {
        let s = self.sin.abs();
        let (w, h) = (c.w() as f32, c.h() as f32);
        (
            (w - h * s).max(0.3 * w).max(1.0),
            (h - w * s).max(0.3 * h).max(1.0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comp(cx: f32, cy: f32, w: u32, h: u32) -> Comp {
        let (x0, y0) = ((cx - w as f32 / 2.0) as u32, (cy - h as f32 / 2.0) as u32);
        Comp {
            x0,
            y0,
            x1: x0 + w,
            y1: y0 + h,
            area: w * h,
        }
    }

    /// Character-sized boxes along `rows` lines at `degrees`.
    fn lines_at(degrees: f32, rows: usize) -> Vec<Comp> {
        let t = degrees.to_radians().tan();
        let mut out = Vec::new();
        for r in 0..rows {
            for i in 0..40 {
                let x = 50.0 + 18.0 * i as f32;
                out.push(comp(x, 100.0 + 40.0 * r as f32 + x * t, 12, 16));
            }
        }
        out
    }

    #[test]
    fn finds_known_angles() {
        for deg in [-2.5f32, -1.0, 0.0, 0.7, 2.0, 2.9] {
            let est = estimate(&lines_at(deg, 6), 3.0);
            assert!((est - deg).abs() < 0.15, "{deg}: {est}");
        }
    }

    #[test]
    fn frame_levels_a_skewed_line() {
        let f = Frame::new(2.0, 800.0, 600.0);
        let t = 2f32.to_radians().tan();
        let (_, y0) = f.level(100.0, 300.0 + 100.0 * t);
        let (_, y1) = f.level(700.0, 300.0 + 700.0 * t);
        assert!((y0 - y1).abs() < 0.01, "{y0} {y1}");
    }

    #[test]
    fn too_few_components_is_level() {
        assert_eq!(estimate(&[comp(10.0, 10.0, 5, 5)], 3.0), 0.0);
    }
}
