//! Seconds per step of a long command: `train()` keeps them in its report, the SQL layer logs
//! them at DEBUG1.

use std::time::Instant;

pub struct Stopwatch {
    last: Instant,
    steps: Vec<(&'static str, f64)>,
}

impl Default for Stopwatch {
    fn default() -> Self {
        Self {
            last: Instant::now(),
            steps: Vec::new(),
        }
    }
}

impl Stopwatch {
    /// Ends the step named `step` (it began at the previous mark, or at the start).
    pub fn mark(&mut self, step: &'static str) {
        let now = Instant::now();
        self.steps
            .push((step, now.duration_since(self.last).as_secs_f64()));
        self.last = now;
    }

    pub fn steps(&self) -> &[(&'static str, f64)] {
        &self.steps
    }

    pub fn into_steps(self) -> Vec<(&'static str, f64)> {
        self.steps
    }

    /// "load 4.081 s, block 6.880 s, …"
    pub fn summary(&self) -> String {
        self.steps
            .iter()
            .map(|(step, s)| format!("{step} {s:.3} s"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_follow_each_other() {
        let mut watch = Stopwatch::default();
        std::thread::sleep(std::time::Duration::from_millis(20));
        watch.mark("first");
        watch.mark("second");
        let steps = watch.steps();
        assert_eq!(
            steps.iter().map(|s| s.0).collect::<Vec<_>>(),
            ["first", "second"]
        );
        assert!(steps[0].1 >= 0.02 && steps[1].1 < steps[0].1, "{steps:?}");
        assert!(
            watch.summary().starts_with("first 0.0"),
            "{}",
            watch.summary()
        );
    }
}
