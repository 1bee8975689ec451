//! A real Prometheus (Debian's package) scrapes synguard during a flood; what it computes with
//! rate() matches what the generator sent.

use std::{thread, time::Duration};

use nix::sys::signal::Signal;
use synguard_lab::{HttpServer, Lab, Prometheus, SynShape, Synguard, syn_flood};

#[test]
fn prometheus_sees_the_flood_at_the_rate_it_was_sent() {
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
    sg.stop(Signal::SIGTERM).unwrap();
}
