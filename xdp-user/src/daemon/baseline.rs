//! `auto` mode's threshold relative to normal traffic: an exponentially weighted moving
//! average of the SYN rate to protected ports, learned while there is no attack, so an
//! operator can say "8x the usual" instead of guessing a number.

use std::time::Duration;

/// The learned SYN rate.
#[derive(Debug)]
pub struct Baseline {
    /// The average's time constant: a change in normal traffic is 63 % learned after it.
    time_constant: Duration,
    rate: Option<f64>,
    last: Option<(Duration, u64)>,
}

impl Baseline {
    pub fn new(time_constant: Duration) -> Baseline {
        Baseline {
            time_constant,
            rate: None,
            last: None,
        }
    }

    /// Feeds the SYN counter read at monotonic time `now`. During an attack the average is
    /// left alone: the flood is not normal traffic, and must not raise the threshold.
    pub fn observe(&mut self, now: Duration, syns: u64, under_attack: bool) {
        let Some((then, before)) = self.last.replace((now, syns)) else {
            return;
        };
        let elapsed = now.saturating_sub(then).as_secs_f64();
        if elapsed <= 0.0 || under_attack || syns < before {
            return;
        }
        let rate = (syns - before) as f64 / elapsed;
        let weight = 1.0 - (-elapsed / self.time_constant.as_secs_f64()).exp();
        self.rate = Some(match self.rate {
            None => rate,
            Some(average) => average + weight * (rate - average),
        });
    }

    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// The threshold in SYN/s: `factor` times the baseline, never below `floor`.
    pub fn threshold(&self, factor: f64, floor: u32) -> u32 {
        let relative = self.rate.unwrap_or(0.0) * factor;
        (relative.min(f64::from(u32::MAX)) as u32).max(floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_follows_normal_traffic_and_ignores_attacks() {
        let mut baseline = Baseline::new(Duration::from_secs(10));
        let second = |s: u64| Duration::from_secs(s);
        baseline.observe(second(0), 0, false);
        assert_eq!(baseline.rate(), None, "one reading is no rate yet");
        assert_eq!(baseline.threshold(8.0, 1000), 1000, "the floor until then");
        baseline.observe(second(1), 100, false);
        assert_eq!(baseline.rate(), Some(100.0));
        // A flood of 100k/s for 5 s: not learned.
        baseline.observe(second(6), 500_100, true);
        assert_eq!(baseline.rate(), Some(100.0));
        // Normal traffic doubles: after one time constant, 63 % of the way.
        let mut syns = 500_100;
        for s in 7..=16 {
            syns += 200;
            baseline.observe(second(s), syns, false);
        }
        let rate = baseline.rate().unwrap();
        assert!((rate - 163.2).abs() < 1.0, "{rate}");
        assert_eq!(baseline.threshold(8.0, 1000), 1305);
        assert_eq!(baseline.threshold(8.0, 5000), 5000);
        // A counter that went backwards (a new program) is skipped.
        baseline.observe(second(17), 5, false);
        assert_eq!(baseline.rate(), Some(rate));
    }
}
