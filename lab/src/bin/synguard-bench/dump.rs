//! `cargo xtask bench dump`: what a running `synguard dump` costs a flood. The same fixed-rate
//! spoofed SYN flood against synguard in cookie mode, alternately without and with a dump
//! writing a pcapng file at its default rate cap, in one lab: the XDP program's own time per
//! packet (kernel BPF statistics), which is what each SYN of the flood costs, and apart from it
//! the dump process's own CPU time (getrusage of the reaped child). The whole machine's busy
//! time is no measure here: at a fixed 100 k SYN/s it is a few percent of the machine, in
//! jiffies, below the noise of this kind of machine (tried: 300 to 2,800 ns per SYN for the
//! same configuration). Medians of the pairs, and their ratio.

use std::{process::Command, thread, time::Duration};

use anyhow::{Context, Result, ensure};
use nix::sys::signal::Signal;
use synguard_lab::{HttpServer, Lab, SynShape, Synguard, syn_flood};

const PAIRS: usize = 5;
const RATE: u64 = 100_000;
const FLOOD: Duration = Duration::from_secs(3);

struct Sample {
    program_ns: f64,
    /// The dump process's CPU time, user and system, per second of flood.
    dumper_ms_per_s: f64,
    captured: u64,
}

pub fn run() -> Result<()> {
    let _stats = crate::flood::BpfStats::enable()?;
    let lab = Lab::new()?;
    let _http = HttpServer::start(&lab.server, 80)?;
    let sg = Synguard::start(&lab.server, &["--mode", "cookie"])?;
    let file = std::env::temp_dir().join(format!("{}-bench-dump.pcapng", lab.server.name));
    let mut without = Vec::new();
    let mut with = Vec::new();
    for pair in 0..PAIRS {
        // Alternating which goes first, so that a drift of the machine favours neither.
        for dumping in [pair % 2 == 1, pair % 2 == 0] {
            let sample = flood_once(&lab, &sg, dumping.then_some(file.as_path()))?;
            eprintln!(
                "pair {pair}, {}: program {:.0} ns/packet{}",
                if dumping { "dump running" } else { "no dump" },
                sample.program_ns,
                if dumping {
                    format!(
                        ", {} SYNs captured, the dumper {:.1} ms CPU per second",
                        sample.captured, sample.dumper_ms_per_s
                    )
                } else {
                    String::new()
                }
            );
            match dumping {
                true => with.push(sample),
                false => without.push(sample),
            }
        }
    }
    sg.stop(Signal::SIGTERM)?;
    let _ = std::fs::remove_file(&file);

    let med = |samples: &[Sample], f: fn(&Sample) -> f64| {
        let mut v: Vec<f64> = samples.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (p0, p1) = (
        med(&without, |s| s.program_ns),
        med(&with, |s| s.program_ns),
    );
    let dumper = med(&with, |s| s.dumper_ms_per_s);
    let captured = med(&with, |s| s.captured as f64);
    println!(
        "## A dump during a flood ({} SYN/s, {} s, {PAIRS} pairs, medians)\n",
        RATE,
        FLOOD.as_secs()
    );
    println!("| | no dump | dump running | ratio |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| XDP program, ns per packet (each SYN's cost) | {p0:.0} | {p1:.0} | {:.3} |",
        p1 / p0
    );
    println!(
        "\nThe dump captured about {captured:.0} SYNs a run, each with its SYN-ACK (its default \
         cap is 10,000 records a second, shared by the CPUs), and its own process used \
         {dumper:.1} ms of CPU per second. Issue 18's target: the flood's cost per SYN within \
         1.10 of no dump."
    );
    Ok(())
}

fn flood_once(lab: &Lab, sg: &Synguard, dump: Option<&std::path::Path>) -> Result<Sample> {
    let mut dumper = match dump {
        Some(file) => {
            let child = Command::new(synguard_lab::synguard_bin()?)
                .args([
                    "dump",
                    "--iface",
                    &lab.server.iface,
                    "--duration",
                    "30",
                    "-w",
                ])
                .arg(file)
                .stderr(std::process::Stdio::null())
                .spawn()
                .context("starting synguard dump")?;
            // Its capture on before the flood starts.
            thread::sleep(Duration::from_millis(300));
            Some(child)
        }
        None => None,
    };
    let program = |sg: &Synguard| -> Result<(f64, f64)> {
        let m = sg.metrics()?;
        Ok((
            m.sum("synguard_program_run_seconds_total", &[]),
            m.sum("synguard_program_runs_total", &[]),
        ))
    };
    let (run0, count0) = program(sg)?;
    let report = syn_flood(
        lab,
        80,
        RATE * FLOOD.as_secs(),
        Some(RATE),
        SynShape::Bare,
        FLOOD * 4,
    )?;
    let (run1, count1) = program(sg)?;
    let mut captured = 0;
    let mut dumper_ms_per_s = 0.0;
    if let Some(mut child) = dumper.take() {
        let children = || -> Result<f64> {
            let usage =
                nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
            let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            Ok(seconds(usage.user_time()) + seconds(usage.system_time()))
        };
        let before = children()?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            Signal::SIGINT,
        )?;
        child.wait()?;
        dumper_ms_per_s = (children()? - before) * 1e3 / report.elapsed.as_secs_f64();
        if let Some(file) = dump {
            let out = Command::new("tcpdump")
                .arg("-nr")
                .arg(file)
                .stderr(std::process::Stdio::null())
                .output()?;
            captured = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains("Flags [S],"))
                .count() as u64;
        }
    }
    ensure!(
        count1 > count0,
        "no runs counted: is kernel.bpf_stats_enabled on?"
    );
    Ok(Sample {
        program_ns: (run1 - run0) * 1e9 / (count1 - count0),
        dumper_ms_per_s,
        captured,
    })
}
