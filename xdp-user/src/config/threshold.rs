//! `auto` mode's threshold as an operator gives it: SYN/s, or a multiple of the learned
//! baseline (`daemon::baseline`).

use std::{fmt, str::FromStr};

/// `--auto-threshold`: SYN/s, or a multiple of the learned baseline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Threshold {
    Absolute(u32),
    Relative(f64),
}

impl FromStr for Threshold {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "'{text}' is not a threshold: give SYN/s (e.g. 10000) or a multiple of the \
                 learned baseline (e.g. 8x)"
            )
        };
        if let Some(factor) = text.strip_suffix(['x', 'X']) {
            let factor: f64 = factor.trim().parse().map_err(|_| bad())?;
            if !(factor.is_finite() && factor > 1.0) {
                return Err(format!(
                    "'{text}': a relative threshold must be more than 1x the baseline"
                ));
            }
            return Ok(Threshold::Relative(factor));
        }
        text.trim()
            .parse::<u32>()
            .ok()
            .filter(|&pps| pps > 0)
            .map(Threshold::Absolute)
            .ok_or_else(bad)
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::Absolute(pps) => write!(f, "{pps}"),
            Threshold::Relative(factor) => write!(f, "{factor}x"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse() {
        assert_eq!("10000".parse(), Ok(Threshold::Absolute(10_000)));
        assert_eq!("8x".parse(), Ok(Threshold::Relative(8.0)));
        assert_eq!("2.5X".parse(), Ok(Threshold::Relative(2.5)));
        for bad in [
            "",
            "0",
            "-5",
            "x",
            "1x",
            "0.5x",
            "nanx",
            "ten",
            "10000 SYN/s",
        ] {
            assert!(bad.parse::<Threshold>().is_err(), "{bad} accepted");
        }
        assert_eq!(Threshold::Relative(8.0).to_string(), "8x");
    }
}
