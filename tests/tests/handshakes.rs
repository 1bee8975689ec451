//! Handshake completion per port: real clients complete nearly every SYN-ACK synguard sends,
//! a spoofed flood nearly none. Checked in the metrics, in `status`, in `top`, and in the log's
//! summary of an attack, with real clients and the lab's spoofed flood.

use std::{net::SocketAddr, thread, time::Duration};

use serde_json::Value;
use synguard_lab::{HttpServer, Lab, SynShape, Synguard, run_legit_clients, syn_flood};
use synguard_tests::{status, succeeded, synguard_cli};

const PORT: u16 = 80;
const QUIET_PORT: u16 = 8080;

/// (SYN-ACKs sent, cookies completed) on `port`, from the metrics.
fn counts(sg: &Synguard, port: &str) -> (f64, f64) {
    let m = sg.metrics().unwrap();
    (
        m.sum("synguard_handshakes_answered_total", &[("port", port)]),
        m.sum("synguard_handshakes_completed_total", &[("port", port)]),
    )
}

#[test]
fn real_clients_complete_their_handshakes_and_a_spoofed_flood_does_not() {
    let lab = Lab::new().unwrap();
    let _http = HttpServer::start(&lab.server, PORT).unwrap();
    let _quiet = HttpServer::start(&lab.server, QUIET_PORT).unwrap();
    let sg = Synguard::start(&lab.server, &["--mode", "cookie"]).unwrap();
    let iface = lab.server.iface.clone();
    let target: SocketAddr = (lab.server.ipv4, PORT).into();

    // Each listening port has its own label from the start, the quiet one included.
    let m = sg.metrics().unwrap();
    for port in ["80", "8080", "other"] {
        m.value("synguard_handshakes_answered_total", &[("port", port)])
            .unwrap_or_else(|e| panic!("port {port}: {e}"));
    }

    // Real clients alone: nearly all complete.
    let legit = run_legit_clients(
        &lab.client,
        target,
        200,
        Duration::from_millis(2),
        Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!(legit.succeeded, 200);
    let (answered, completed) = counts(&sg, "80");
    eprintln!("real clients: {completed} of {answered} SYN-ACKs completed");
    assert!(answered >= 200.0, "{answered} SYN-ACKs for 200 clients");
    assert!(
        completed / answered >= 0.95,
        "real clients: {completed} of {answered} completed"
    );
    assert_eq!(
        counts(&sg, "8080"),
        (0.0, 0.0),
        "nothing went to the quiet port"
    );

    // A spoofed flood, with real clients alongside: nearly none complete.
    let before = counts(&sg, "80");
    thread::scope(|scope| {
        let clients = scope.spawn(|| {
            run_legit_clients(
                &lab.client,
                target,
                100,
                Duration::from_millis(10),
                Duration::from_secs(1),
            )
            .unwrap()
        });
        syn_flood(
            &lab,
            PORT,
            30_000,
            Some(30_000),
            SynShape::Bare,
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!(clients.join().unwrap().succeeded, 100);
    });
    let after = counts(&sg, "80");
    let (answered, completed) = (after.0 - before.0, after.1 - before.1);
    eprintln!("spoofed flood with 100 real clients: {completed} of {answered} completed");
    assert!(answered >= 29_000.0, "{answered} SYN-ACKs for the flood");
    assert!(
        completed / answered < 0.05,
        "a spoofed flood: {completed} of {answered} completed"
    );

    // status says the same, per port.
    let s = status(&iface);
    let row = s["handshakes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["port"] == "80")
        .unwrap_or_else(|| panic!("{s}"));
    assert_eq!(row["answered"].as_f64(), Some(after.0));
    let text = succeeded(&synguard_cli(&["status", "--iface", &iface]));
    assert!(text.contains("port 80: "), "{text}");

    // top, during a flood: the port's SYN-ACKs per second, and a completion near 0.
    thread::scope(|scope| {
        let flood = scope.spawn(|| {
            syn_flood(
                &lab,
                PORT,
                60_000,
                Some(20_000),
                SynShape::Bare,
                Duration::from_secs(20),
            )
            .unwrap()
        });
        thread::sleep(Duration::from_millis(500));
        let top = succeeded(&synguard_cli(&["top", "--count", "1", "--iface", &iface]));
        let line = top
            .lines()
            .find(|l| l.trim_start().starts_with("port 80 "))
            .unwrap_or_else(|| panic!("no port 80 line: {top}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        let per_second: f64 = fields[2].parse().unwrap();
        let completion: f64 = fields[4].trim_end_matches('%').parse().unwrap();
        assert!(per_second > 10_000.0 && completion < 5.0, "{top}");
        flood.join().unwrap();
    });
    sg.stop(nix::sys::signal::Signal::SIGTERM).unwrap();
}

/// In auto mode, the log's summary of an attack carries the attack's completion.
#[test]
fn the_attack_summary_in_the_log_carries_the_completion() {
    let lab = Lab::new().unwrap();
    let _http = HttpServer::start(&lab.server, PORT).unwrap();
    let sg = Synguard::start(
        &lab.server,
        &[
            "--mode",
            "auto",
            "--auto-threshold",
            "3000",
            "--auto-hold-ms",
            "300",
            "--log-format",
            "json",
        ],
    )
    .unwrap();
    syn_flood(
        &lab,
        PORT,
        40_000,
        Some(40_000),
        SynShape::Bare,
        Duration::from_secs(20),
    )
    .unwrap();
    let summary = (0..60)
        .find_map(|_| {
            let log = sg.log();
            let found = log
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|l| l["fields"]["message"] == "SYN flood over: passing SYNs to the kernel");
            if found.is_none() {
                thread::sleep(Duration::from_millis(100));
            }
            found
        })
        .unwrap_or_else(|| panic!("no attack summary: {}", sg.log()));
    let fields = &summary["fields"];
    eprintln!("attack summary: {fields}");
    let sent = fields["synacks_sent"].as_u64().unwrap();
    assert!(sent > 30_000, "{summary}");
    assert!(
        fields["handshakes_completed"].as_u64().unwrap() < sent / 20,
        "{summary}"
    );
    let completion = fields["completion"].as_str().unwrap();
    let ratio: f64 = completion.trim_end_matches('%').parse().unwrap();
    assert!(ratio < 5.0, "{summary}");
    assert!(
        fields["completion_by_port"]
            .as_str()
            .unwrap()
            .starts_with("80: "),
        "{summary}"
    );
    sg.stop(nix::sys::signal::Signal::SIGTERM).unwrap();
}
