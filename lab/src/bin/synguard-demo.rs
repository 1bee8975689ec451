//! `cargo xtask demo`: synguard's main job in a lab of its own, for someone trying it for the
//! first time. Everything happens inside two network namespaces made for this run, and is
//! removed at the end.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicI32, Ordering},
    thread,
    time::Duration,
};

use anyhow::{Result, ensure};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use synguard_common::{Action, Class, Reason};
use synguard_lab::{
    FLOOD_SOURCES, HttpServer, Lab, LegitReport, MetricsText, SPOOFED_V4, SynShape, Synguard,
    remove_labs_of, run_legit_clients, syn_flood,
};

const HTTP_PORT: u16 = 80;
const FLOOD_RATE: u64 = 150_000;
const FLOOD_SECONDS: u64 = 4;
/// Legit load: one request every 5 ms, each allowed 1 s (a lost SYN costs the kernel's 1 s
/// retransmission timeout, so it shows as a failure).
const LEGIT: u32 = 400;
const LEGIT_INTERVAL: Duration = Duration::from_millis(5);
const LEGIT_TIMEOUT: Duration = Duration::from_secs(1);

fn main() -> Result<()> {
    remove_lab_on_interrupt()?;
    println!("synguard demo: a web server, its clients, and a spoofed SYN flood, all inside two");
    println!("network namespaces made for this run.\n");

    let lab = Lab::new()?;
    let http = HttpServer::start(&lab.server, HTTP_PORT)?;
    let target: SocketAddr = (lab.server.ipv4, HTTP_PORT).into();
    println!(
        "  server     {} ({}), HTTP on port {HTTP_PORT}",
        lab.server.name, lab.server.ipv4
    );
    println!("  client     {} ({})", lab.client.name, lab.client.ipv4);

    let synguard = Synguard::start(&lab.server, &[])?;
    println!(
        "  synguard   `synguard run --iface {}` (mode auto: cookies above 10,000 SYN/s),\n             \
         metrics on http://{}/metrics\n",
        lab.server.iface, synguard.metrics_addr
    );

    print!("[1/4] calm: {LEGIT} legit HTTP requests, one every 5 ms ... ");
    let calm = run_legit_clients(&lab.client, target, LEGIT, LEGIT_INTERVAL, LEGIT_TIMEOUT)?;
    println!("{}", summary(&calm));

    println!(
        "[2/4] SYN flood: {} k SYN/s for {FLOOD_SECONDS} s from {FLOOD_SOURCES} spoofed sources \
         in {SPOOFED_V4},\n      with the same legit requests alongside",
        FLOOD_RATE / 1000
    );
    let kernel_cookies_before = lab.server.netstat("TcpExtSyncookiesSent")?;
    let (flood, during) = thread::scope(|scope| {
        let flood = scope.spawn(|| {
            syn_flood(
                &lab,
                HTTP_PORT,
                FLOOD_RATE * FLOOD_SECONDS,
                Some(FLOOD_RATE),
                SynShape::Bare,
                Duration::from_secs(FLOOD_SECONDS * 5),
            )
        });
        thread::sleep(Duration::from_millis(300));
        let during = run_legit_clients(&lab.client, target, LEGIT, LEGIT_INTERVAL, LEGIT_TIMEOUT);
        (flood.join().expect("flood thread"), during)
    });
    let (flood, during) = (flood?, during?);
    let kernel_cookies = lab.server.netstat("TcpExtSyncookiesSent")? - kernel_cookies_before;
    println!(
        "      flood: {} SYNs in {:.1} s ({:.0} k SYN/s)",
        flood.sent,
        flood.elapsed.as_secs_f64(),
        flood.rate() / 1000.0
    );
    println!("      legit: {}", summary(&during));

    thread::sleep(Duration::from_millis(300));
    println!("[3/4] what synguard did, from its /metrics and its log:");
    let m = synguard.metrics()?;
    for line in synguard.log().lines().filter(|l| l.contains("SYN flood")) {
        println!(
            "      log: {}",
            line.split_once("  INFO ").map_or(line, |(_, rest)| rest)
        );
    }
    print_decisions(&m);
    let answered = m.sum(
        "synguard_packets_total",
        &[("class", "syn"), ("action", "tx")],
    );
    println!(
        "\n      {answered} SYN-ACKs were sent from XDP; the kernel sent {kernel_cookies} SYN cookies \
         of its own."
    );

    print!("[4/4] after the flood ... ");
    let mut calm_again = false;
    for _ in 0..50 {
        let _ = run_legit_clients(&lab.client, target, 5, LEGIT_INTERVAL, LEGIT_TIMEOUT)?;
        if synguard.metrics()?.sum("synguard_under_attack", &[]) == 0.0 {
            calm_again = true;
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        calm_again,
        "synguard did not return to passing: {}",
        synguard.log()
    );
    println!("back to passing SYNs to the kernel; tcp_syncookies restored.");
    // The controller's end-of-attack line: its peak rate and the sources it sampled.
    for _ in 0..20 {
        let log = synguard.log();
        if let Some(line) = log.lines().find(|l| l.contains("SYN flood over")) {
            println!(
                "      log: {}",
                line.split_once("  INFO ").map_or(line, |(_, rest)| rest)
            );
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    println!("      HTTP requests served in all: {}\n", http.served());

    synguard.stop(Signal::SIGTERM)?;
    ensure!(
        !lab.server.xdp_attached()?,
        "synguard left its program attached"
    );
    drop(http);
    drop(lab);
    println!("teardown: synguard detached, sysctls restored, namespaces removed.");
    Ok(())
}

/// Ctrl-C (or SIGTERM) removes the lab at once, synguard with it, instead of leaving the
/// namespaces for the next run to clean up. A handler that only raises a flag, and a thread
/// that acts on it: not a blocked signal mask, which child processes would inherit (synguard
/// then never sees its own SIGTERM).
fn remove_lab_on_interrupt() -> Result<()> {
    static INTERRUPTED: AtomicI32 = AtomicI32::new(0);
    extern "C" fn raise_flag(signal: libc::c_int) {
        INTERRUPTED.store(signal, Ordering::SeqCst);
    }
    let action = SigAction::new(
        SigHandler::Handler(raise_flag),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action)? };
    }
    thread::spawn(|| {
        loop {
            thread::sleep(Duration::from_millis(50));
            let signal = INTERRUPTED.load(Ordering::SeqCst);
            if signal != 0 {
                eprintln!("\nsignal {signal}: removing the lab");
                remove_labs_of(std::process::id());
                std::process::exit(130);
            }
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
        "{}/{} completed within 1 s, p50 {:.2} ms, p99 {:.2} ms",
        report.succeeded,
        report.attempted,
        ms(0.5),
        ms(0.99)
    );
    if let Some(error) = &report.first_error {
        text.push_str(&format!("; first failure: {error}"));
    }
    text
}

fn print_decisions(m: &MetricsText) {
    println!("\n      {:<24} {:>10}", "decision", "count");
    for reason in Reason::ALL {
        let n = m.sum("synguard_decisions_total", &[("reason", reason.name())]);
        if n > 0.0 {
            println!("      {:<24} {n:>10}", reason.name());
        }
    }
    println!("\n      {:<16} {:<8} {:>10}", "class", "action", "packets");
    for class in Class::ALL {
        for action in Action::ALL {
            let labels = [("class", class.name()), ("action", action.name())];
            let packets = m.sum("synguard_packets_total", &labels);
            if packets > 0.0 {
                println!(
                    "      {:<16} {:<8} {packets:>10}",
                    class.name(),
                    action.name()
                );
            }
        }
    }
}
