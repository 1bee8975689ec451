//! Reading numbers back out of Prometheus text exposition, for assertions and the demo.

use anyhow::{Context, Result, bail};

/// Label names and values of one sample.
pub type Labels = Vec<(String, String)>;

/// Parsed samples: metric name, labels, value.
#[derive(Debug, Clone)]
pub struct MetricsText {
    samples: Vec<(String, Labels, f64)>,
}

impl MetricsText {
    pub fn parse(text: &str) -> Result<MetricsText> {
        let mut samples = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            samples.push(parse_sample(line).with_context(|| format!("metrics line {line:?}"))?);
        }
        Ok(MetricsText { samples })
    }

    /// Sum of the samples of `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|(_, value)| value).sum()
    }

    /// The one sample of `name` with all of `labels`; an error if there is none or several.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        let found: Vec<_> = self.matching(name, labels).collect();
        match found.as_slice() {
            [(_, value)] => Ok(*value),
            [] => bail!("no sample {name}{labels:?}"),
            _ => bail!("{} samples match {name}{labels:?}", found.len()),
        }
    }

    /// Every sample of `name` with all of `labels`, as (labels, value).
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = (&'a [(String, String)], f64)> + 'a {
        self.samples
            .iter()
            .filter(move |(n, have, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
            })
            .map(|(_, have, value)| (have.as_slice(), *value))
    }
}

fn parse_sample(line: &str) -> Result<(String, Labels, f64)> {
    let name_end = line
        .find(['{', ' '])
        .context("no value after the metric name")?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        let close = loop {
            let (i, c) = chars.next().context("unterminated label set")?;
            match c {
                '}' => break i,
                ',' | ' ' => {}
                '=' => {
                    let (_, quote) = chars.next().context("label without value")?;
                    if quote != '"' {
                        bail!("label value not quoted");
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next().context("unterminated label value")?.1 {
                            '"' => break,
                            '\\' => match chars.next().context("dangling escape")?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        };
        rest = &inner[close + 1..];
    }
    let value = rest
        .split_whitespace()
        .next()
        .context("no value")?
        .parse::<f64>()
        .context("value is not a number")?;
    Ok((name, labels, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_values_and_skips_comments() {
        let text = "# HELP x_total help\n# TYPE x_total counter\n\
                    x_total{a=\"1\",b=\"two\"} 5\nx_total{a=\"1\",b=\"q\\\"uote\"} 7\ny 1.5\n";
        let m = MetricsText::parse(text).unwrap();
        assert_eq!(m.sum("x_total", &[("a", "1")]), 12.0);
        assert_eq!(m.value("x_total", &[("b", "two")]).unwrap(), 5.0);
        assert_eq!(m.value("x_total", &[("b", "q\"uote")]).unwrap(), 7.0);
        assert_eq!(m.value("y", &[]).unwrap(), 1.5);
        assert!(
            m.value("x_total", &[("a", "1")]).is_err(),
            "two samples match"
        );
        assert!(m.value("z", &[]).is_err());
        assert!(MetricsText::parse("x{a=1} 2").is_err());
    }
}
