//! Learning-rate schedule: linear warmup to the peak, then cosine decay to the minimum.

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub peak_lr: f64,
    pub min_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl LrSchedule {
    /// Learning rate of optimizer step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.min_lr + (self.peak_lr - self.min_lr) * cosine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = LrSchedule {
            peak_lr: 1e-4,
            min_lr: 1e-6,
            warmup_steps: 10,
            total_steps: 110,
        };
        assert!((s.lr(0) - 1e-5).abs() < 1e-18);
        assert!((s.lr(9) - 1e-4).abs() < 1e-18);
        assert!((s.lr(10) - 1e-4).abs() < 1e-18);
        assert!((s.lr(60) - (1e-6 + (1e-4 - 1e-6) * 0.5)).abs() < 1e-15);
        assert!((s.lr(110) - 1e-6).abs() < 1e-18);
        assert!((s.lr(500) - 1e-6).abs() < 1e-18);
        for i in 10..110 {
            assert!(s.lr(i + 1) <= s.lr(i));
        }
    }
}
