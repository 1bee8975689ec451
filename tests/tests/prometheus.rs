//! A real Prometheus (Debian's package) scrapes synguard during a flood; what it computes with
//! rate() matches what the generator sent.

use std::{
    sync::{Mutex, MutexGuard},
    thread,
    time::Duration,
};

use nix::sys::signal::Signal;
use synguard_lab::{HttpServer, Lab, Prometheus, SynShape, Synguard, syn_flood};

/// Both tests flood; one at a time, so neither measures the other.
static ONE_FLOOD_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_flood_at_a_time() -> MutexGuard<'static, ()> {
    ONE_FLOOD_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

#[test]
fn prometheus_sees_the_flood_at_the_rate_it_was_sent() {
    let _flood = one_flood_at_a_time();
    let lab = Lab::new().unwrap();
    let _http = HttpServer::start(&lab.server, 80).unwrap();
    let sg = Synguard::start(&lab.server, &["--mode", "cookie"]).unwrap();
    let prometheus =
        Prometheus::start(&lab.server, sg.metrics_addr, Duration::from_secs(1)).unwrap();
    // Wait for the first scrape.
    let mut up = 0.0;
    for _ in 0..50 {
        up = prometheus.query("up{job=\"synguard\"}").unwrap_or(0.0);
        if up == 1.0 {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(up, 1.0, "Prometheus never scraped synguard");

    const RATE: u64 = 100_000;
    let (measured, attack, flood) = thread::scope(|scope| {
        let flood = scope.spawn(|| {
            syn_flood(
                &lab,
                80,
                RATE * 9,
                Some(RATE),
                SynShape::Bare,
                Duration::from_secs(30),
            )
            .unwrap()
        });
        // Well inside the flood: the last 5 s of samples all fall within it.
        thread::sleep(Duration::from_secs(7));
        let measured = prometheus
            .query("sum(rate(synguard_packets_total{class=\"syn\"}[5s]))")
            .unwrap();
        let attack = prometheus.query("synguard_under_attack").unwrap();
        (measured, attack, flood.join().unwrap())
    });
    let sent = flood.rate();
    let error = (measured - sent) / sent;
    eprintln!(
        "generator {sent:.0} SYN/s; Prometheus rate() {measured:.0} SYN/s ({:+.2} %)",
        error * 100.0
    );
    assert!(sent >= 90_000.0, "flood too slow: {flood:?}");
    assert!(
        error.abs() <= 0.05,
        "rate() {measured:.0} vs {sent:.0} sent"
    );
    assert_eq!(attack, 1.0);

    // Every query of the Grafana dashboard is valid PromQL and finds synguard's data.
    for (title, expr) in dashboard_queries() {
        let result = prometheus.query_all(&expr).unwrap();
        assert!(!result.is_empty(), "panel {title:?}: no data for {expr}");
    }
    sg.stop(Signal::SIGTERM).unwrap();
}

/// The dashboard's queries (panel title, expression), with its variables filled in as Grafana
/// would for "all interfaces" over the last minute.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/synguard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$interface", ".*")
                .replace("$__rate_interval", "5s")
                .replace("$__range", "1m");
            queries.push((panel["title"].as_str().unwrap().to_string(), expr));
        }
    }
    queries
}

/// kernel.bpf_stats_enabled (global) is switched on for this test only, and put back.
struct BpfStats(String);

impl BpfStats {
    fn enable() -> BpfStats {
        let before = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap();
        std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").unwrap();
        BpfStats(before.trim().to_string())
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.0);
    }
}

#[test]
fn the_programs_run_time_comes_from_the_kernels_bpf_statistics() {
    let _flood = one_flood_at_a_time();
    let lab = Lab::new().unwrap();
    let sg = Synguard::start(&lab.server, &["--mode", "cookie"]).unwrap();
    let _stats = BpfStats::enable();
    synguard_lab::syn_flood(
        &lab,
        80,
        20_000,
        Some(20_000),
        SynShape::Bare,
        Duration::from_secs(10),
    )
    .unwrap();
    let m = sg.metrics().unwrap();
    assert_eq!(m.sum("synguard_bpf_stats_enabled", &[]), 1.0);
    let runs = m.sum("synguard_program_runs_total", &[]);
    let seconds = m.sum("synguard_program_run_seconds_total", &[]);
    assert!(runs >= 20_000.0, "{runs} runs for 20,000 SYNs");
    let ns = seconds * 1e9 / runs;
    eprintln!("{runs} runs, {ns:.0} ns each");
    assert!((10.0..100_000.0).contains(&ns), "{ns} ns per run");
    sg.stop(Signal::SIGTERM).unwrap();
}
