//! `--ports`: which destination ports are protected, as lists and ranges ("80,443,8000-8100").

use std::{fmt, str::FromStr};

use synguard_common::PORTS_WORDS;

/// A set of ports, as the bitmap the XDP program reads (bit `p % 64` of word `p / 64`).
#[derive(Clone, PartialEq, Eq)]
pub struct PortSet {
    words: Vec<u64>,
    spec: String,
}

impl PortSet {
    pub fn contains(&self, port: u16) -> bool {
        self.words[usize::from(port >> 6)] & (1 << (port & 63)) != 0
    }

    pub fn words(&self) -> &[u64] {
        &self.words
    }

    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PortSet({})", self.spec)
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)
    }
}

impl FromStr for PortSet {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut words = vec![0u64; PORTS_WORDS as usize];
        let port = |text: &str| -> Result<u16, String> {
            match text.trim().parse::<u32>() {
                Ok(0) => Err("port 0 cannot be protected".to_string()),
                Ok(p) if p <= 65535 => Ok(p as u16),
                Ok(p) => Err(format!("port {p} is out of range (1-65535)")),
                Err(_) => Err(format!(
                    "'{}' is not a port number",
                    text.trim().escape_debug()
                )),
            }
        };
        for item in spec.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(format!(
                    "empty entry in '{}' (expected e.g. 80,443,8000-8100)",
                    spec.escape_debug()
                ));
            }
            let (first, last) = match item.split_once('-') {
                Some((a, b)) => (port(a)?, port(b)?),
                None => (port(item)?, port(item)?),
            };
            if first > last {
                return Err(format!(
                    "range '{item}' runs backwards (write {last}-{first})"
                ));
            }
            for p in first..=last {
                words[usize::from(p >> 6)] |= 1 << (p & 63);
            }
        }
        Ok(PortSet {
            words,
            spec: spec.trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_ranges() {
        let set: PortSet = "80, 443,8000-8002,65535".parse().unwrap();
        for p in [80, 443, 8000, 8001, 8002, 65535] {
            assert!(set.contains(p), "{p}");
        }
        for p in [1, 79, 81, 442, 7999, 8003, 65534] {
            assert!(!set.contains(p), "{p}");
        }
        assert_eq!(set.len(), 6);
        assert_eq!("1-65535".parse::<PortSet>().unwrap().len(), 65535);
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (spec, needle) in [
            ("", "empty entry"),
            ("80,,443", "empty entry"),
            ("http", "'http' is not a port number"),
            ("0", "port 0"),
            ("70000", "out of range"),
            ("90-80", "runs backwards (write 80-90)"),
            ("80-", "'' is not a port number"),
            ("-5", "'' is not a port number"),
        ] {
            let err = spec.parse::<PortSet>().unwrap_err();
            assert!(err.contains(needle), "{spec:?}: {err}");
        }
    }
}
