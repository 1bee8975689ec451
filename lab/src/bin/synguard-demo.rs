//! `cargo xtask demo`: synguard's main job in a lab of its own, for someone trying it for the
//! first time. Everything happens inside two network namespaces made for this run, and is
//! removed at the end.

use std::{
    net::SocketAddr,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use nix::sys::signal::{SigSet, Signal};
use synguard_common::{Action, Class};
use synguard_lab::{
    HttpServer, Lab, LegitReport, MetricsText, SPOOFED_V4, Synguard, remove_labs_of, run_bounded,
    run_legit_clients,
};

/// Two hping3 processes, each sending this many SYNs as fast as its timer allows
/// (`-i u1`, about 20-25 k SYN/s each on this kind of machine).
const FLOOD_PER_SOURCE: u32 = 100_000;
const FLOOD_SOURCES: [&str; 2] = ["198.18.200.1", "198.18.200.2"];
const HTTP_PORT: u16 = 80;

fn main() -> Result<()> {
    remove_lab_on_interrupt()?;
    println!("synguard demo: a server, a client, and a SYN flood, all inside two network");
    println!("namespaces made for this run ({SPOOFED_V4} is the spoofed source range).\n");

    let lab = Lab::new()?;
    let http = HttpServer::start(&lab.server, HTTP_PORT)?;
    let target: SocketAddr = (lab.server.ipv4, HTTP_PORT).into();
    println!(
        "  server     {} ({}), HTTP on port {HTTP_PORT}",
        lab.server.name, lab.server.ipv4
    );
    println!("  client     {} ({})", lab.client.name, lab.client.ipv4);

    let synguard = Synguard::start(&lab.server, &[])?;
    let m = synguard.metrics()?;
    let program_id = m
        .matching("synguard_xdp_program_info", &[])
        .find_map(|(labels, _)| {
            labels
                .iter()
                .find(|(k, _)| k == "program_id")
                .map(|(_, v)| v.clone())
        })
        .unwrap_or_default();
    println!(
        "  synguard   attached to {} (native XDP, program id {program_id}), metrics on http://{}/metrics\n",
        lab.server.iface, synguard.metrics_addr
    );

    print!("[1/3] baseline: 100 legit HTTP requests, no flood ... ");
    let baseline = run_legit_clients(
        &lab.client,
        target,
        100,
        Duration::from_millis(2),
        Duration::from_secs(3),
    )?;
    println!("{}", summary(&baseline));

    println!(
        "[2/3] SYN flood: {} x `hping3 -S -c {FLOOD_PER_SOURCE} -i u1` from spoofed sources, plus 200 legit requests",
        FLOOD_SOURCES.len()
    );
    let started = Instant::now();
    let floods: Vec<_> = FLOOD_SOURCES
        .iter()
        .map(|source| {
            let mut cmd: Command = lab.client.command("hping3");
            cmd.args(["-q", "-S", "-p", &HTTP_PORT.to_string(), "-a", source])
                .args(["-c", &FLOOD_PER_SOURCE.to_string(), "-i", "u1"])
                .arg(lab.server.ipv4.to_string());
            thread::spawn(move || run_bounded(&mut cmd, Duration::from_secs(60)))
        })
        .collect();
    let during = run_legit_clients(
        &lab.client,
        target,
        200,
        Duration::from_millis(20),
        Duration::from_secs(3),
    )?;
    let mut flood_sent = 0u64;
    for flood in floods {
        let out = flood.join().expect("hping3 thread")?;
        flood_sent += transmitted(&String::from_utf8_lossy(&out.stderr))?;
    }
    let flood_secs = started.elapsed().as_secs_f64();
    println!(
        "      flood: {flood_sent} SYNs in {flood_secs:.1} s ({:.0} k SYN/s)",
        flood_sent as f64 / flood_secs / 1000.0
    );
    println!("      legit: {}", summary(&during));

    // veth delivers in NAPI context; give the last frames a moment to be counted.
    thread::sleep(Duration::from_millis(300));
    println!("[3/3] what synguard counted, from its /metrics:");
    let m = synguard.metrics()?;
    print_counters(&m);
    let syns = m.sum("synguard_packets_total", &[("class", Class::Syn.name())]);
    println!(
        "\n      SYNs seen: {syns} = {flood_sent} flood + {} from the legit clients' connects",
        syns as u64 - flood_sent
    );
    println!("      HTTP requests served: {}", http.served());
    println!(
        "\n  Today synguard observes: it classifies and counts every packet and passes it on."
    );
    println!("  Answering SYNs with SYN cookies from XDP is the next step on the roadmap.\n");

    synguard.stop(Signal::SIGTERM)?;
    ensure!(
        !lab.server.xdp_attached()?,
        "synguard left its program attached"
    );
    drop(http);
    drop(lab);
    println!("teardown: synguard detached, namespaces removed.");
    Ok(())
}

/// Ctrl-C (or SIGTERM) removes the lab at once, synguard and hping3 with it, instead of
/// leaving the namespaces for the next run to clean up. The signals are blocked before any
/// other thread exists, so only the watcher receives them; child processes start with an
/// empty mask (std resets it before exec).
fn remove_lab_on_interrupt() -> Result<()> {
    let mut signals = SigSet::empty();
    signals.add(nix::sys::signal::SIGINT);
    signals.add(nix::sys::signal::SIGTERM);
    signals.thread_block()?;
    thread::spawn(move || {
        if let Ok(signal) = signals.wait() {
            eprintln!("\n{signal}: removing the lab");
            remove_labs_of(std::process::id());
            std::process::exit(130);
        }
    });
    Ok(())
}

fn summary(report: &LegitReport) -> String {
    let ms = |q| {
        report
            .quantile(q)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    let mut text = format!(
        "{}/{} ok ({:.1} %), p50 {:.2} ms, p99 {:.2} ms",
        report.succeeded,
        report.attempted,
        report.success_rate() * 100.0,
        ms(0.5),
        ms(0.99)
    );
    if let Some(error) = &report.first_error {
        text.push_str(&format!("; first failure: {error}"));
    }
    text
}

/// The count from hping3's summary line, "N packets transmitted, ...".
fn transmitted(stderr: &str) -> Result<u64> {
    stderr
        .lines()
        .find_map(|line| line.split_once(" packets transmitted"))
        .and_then(|(count, _)| count.trim().parse().ok())
        .with_context(|| format!("no summary in hping3's output: {stderr}"))
}

fn print_counters(m: &MetricsText) {
    println!(
        "      {:<16} {:<8} {:>10} {:>12}",
        "class", "action", "packets", "bytes"
    );
    for class in Class::ALL {
        for action in Action::ALL {
            let labels = [("class", class.name()), ("action", action.name())];
            let packets = m.sum("synguard_packets_total", &labels);
            if packets > 0.0 {
                let bytes = m.sum("synguard_bytes_total", &labels);
                println!(
                    "      {:<16} {:<8} {packets:>10} {bytes:>12}",
                    class.name(),
                    action.name()
                );
            }
        }
    }
}
