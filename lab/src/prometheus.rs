//! A real Prometheus server (Debian's `prometheus`) in a lab namespace, scraping synguard the
//! way an operator's does, and queried through its HTTP API.

use std::{
    fs,
    net::SocketAddr,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{Netns, Process, http_get};

const LISTEN: &str = "127.0.0.1:9090";

/// One series of a range query: its labels, and its (Unix time, value) points.
pub type Series = (serde_json::Value, Vec<(f64, f64)>);

pub struct Prometheus {
    ns: Netns,
    dir: PathBuf,
    _process: Process,
}

impl Prometheus {
    /// Starts Prometheus in `ns`, scraping `target` (synguard's metrics address in the same
    /// namespace) every `interval`, and waits until it is ready.
    pub fn start(ns: &Netns, target: SocketAddr, interval: Duration) -> Result<Prometheus> {
        let dir = std::env::temp_dir().join(format!("{}-prometheus", ns.name));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let config = dir.join("prometheus.yml");
        let seconds = interval.as_secs_f64();
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: {seconds}s\n  evaluation_interval: {seconds}s\n\
                 scrape_configs:\n  - job_name: synguard\n    static_configs:\n      \
                 - targets: [\"{target}\"]\n"
            ),
        )?;
        let mut cmd: Command = ns.command("prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={LISTEN}"))
            .stderr(fs::File::create(dir.join("prometheus.log"))?);
        let process = Process::spawn("prometheus", &mut cmd)?;
        let prometheus = Prometheus {
            ns: ns.clone(),
            dir,
            _process: process,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while prometheus.get("/-/ready").is_err() {
            if Instant::now() > deadline {
                bail!(
                    "prometheus not ready within 20 s: {}",
                    fs::read_to_string(prometheus.dir.join("prometheus.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(prometheus)
    }

    fn get(&self, path: &str) -> Result<String> {
        http_get(&self.ns, LISTEN.parse()?, path, Duration::from_secs(5))
    }

    /// A query API call's `data.result`, checked for success.
    fn api(&self, path: &str) -> Result<serde_json::Value> {
        let body = self.get(path)?;
        let mut json: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("{path}: {body}"))?;
        if json["status"] != "success" {
            bail!("{path}: {body}");
        }
        Ok(json["data"]["result"].take())
    }

    /// Evaluates an instant query; every series of the result, by its labels.
    pub fn query_all(&self, expr: &str) -> Result<Vec<(serde_json::Value, f64)>> {
        let result = self.api(&format!("/api/v1/query?query={}", encode(expr)))?;
        Ok(result
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let value = r["value"][1].as_str()?.parse().ok()?;
                Some((r["metric"].clone(), value))
            })
            .collect())
    }

    /// Evaluates a range query from `start` to `end` (Unix seconds) every `step` seconds;
    /// every series, by its labels, as (time, value) points.
    pub fn query_range(&self, expr: &str, start: f64, end: f64, step: f64) -> Result<Vec<Series>> {
        let result = self.api(&format!(
            "/api/v1/query_range?query={}&start={start}&end={end}&step={step}",
            encode(expr)
        ))?;
        Ok(result
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let points = r["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| {
                        let t = p[0].as_f64()?;
                        let v: f64 = p[1].as_str()?.parse().ok()?;
                        v.is_finite().then_some((t, v))
                    })
                    .collect();
                (r["metric"].clone(), points)
            })
            .collect())
    }

    /// Evaluates an instant query; the value of its single result (an error for none or
    /// several).
    pub fn query(&self, expr: &str) -> Result<f64> {
        match self.query_all(expr)?.as_slice() {
            [(_, value)] => Ok(*value),
            results => bail!("{} results for {expr}, not one", results.len()),
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes a query for a URL.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
