//! `cargo xtask bench limiter`: what the per-source SYN limit costs per packet, with one source
//! against many, and against the design it replaces (a bucket for every source), measured in
//! the kernel with BPF_PROG_TEST_RUN in one run.
//!
//! `bench_limiter` (xdp-ebpf/src/bin/lab.rs) is the limiter alone: it parses the frame, gives it
//! the next of N sources, and runs `limit::admit` with the product's code and maps. With N = 1
//! every packet comes from one source, which is far over its limit and metered by its bucket.
//!
//! Scale. BPF_PROG_TEST_RUN pushes packets far faster than any flood in the lab, and what the
//! sketch sees depends on the flood's rate against the per-source limit: SYNs per cell per
//! window grow with the one, the promotion threshold with the other. So the limit is set so
//! that the measured packet rate stands to it as a 150k SYN/s flood stands to a limit of
//! 100 SYN/s per source; the table prints both.

use anyhow::{Context, Result};
use aya::{
    Ebpf,
    maps::{Array, MapData},
    programs::{TestRun, TestRunOptions, Xdp},
};
use etherparse::PacketBuilder;
use synguard::{
    config::settings::SourceLimit,
    datapath::maps::{ControlMaps, StatsMap},
};
use synguard_common::{Config, Mode, SOURCE_BUCKETS, limit::SKETCH_WINDOW_NS};

use crate::median;

const ROUNDS: usize = 7;
const REPEAT: u32 = 200_000;
/// The flood and limit the measurement stands for.
const FLOOD_PPS: f64 = 150_000.0;
const LIMIT_PPS: f64 = 100.0;

struct Scenario {
    name: &'static str,
    sources: u32,
    /// `None`: no limit.
    limit: Option<SourceLimit>,
    /// Every source gets a bucket at its first SYN: the sketch out of the way.
    bucket_each: bool,
}

pub fn run() -> Result<()> {
    synguard_lab::require_root()?;
    let mut ebpf = Ebpf::load(synguard::datapath::objects::LAB)?;
    // Taken maps must stay alive: their fds are what the program is loaded against.
    let mut control = ControlMaps::take(&mut ebpf)?;
    let stats = StatsMap::take(&mut ebpf)?;
    let mut spread: Array<MapData, u32> =
        Array::try_from(ebpf.take_map("BENCH_SPREAD").context("BENCH_SPREAD")?)?;
    let program: &mut Xdp = ebpf
        .program_mut("bench_limiter")
        .context("bench_limiter")?
        .try_into()?;
    program.load()?;
    let frame = syn_frame();
    let mut measure = |config: &Config, sources: u32| -> Result<f64> {
        control.set_config(config)?;
        spread.set(0, sources, 0)?;
        let result = program.test_run(TestRunOptions {
            data_in: Some(&frame),
            repeat: REPEAT,
            ..Default::default()
        })?;
        Ok(result.duration.as_nanos() as f64)
    };

    let base = Config {
        mode: Mode::Cookie as u32,
        sketch_seed: 0x5eed_1234,
        ..Config::DEFAULT
    };
    // The packet rate of the limiter itself, to scale the limit (see the module's comment).
    let mut calibration: Vec<f64> = (0..ROUNDS)
        .map(|_| measure(&base, 1))
        .collect::<Result<_>>()?;
    let packet_rate = 1e9 / median(&mut calibration);
    let scaled_limit = (LIMIT_PPS * packet_rate / FLOOD_PPS).round() as u32;
    let limit = SourceLimit {
        rate_pps: scaled_limit,
        burst: scaled_limit,
        prefix_v4: 32,
        prefix_v6: 128,
    };

    let scenarios = [
        Scenario {
            name: "no limit (parse and source rewrite only)",
            sources: 1,
            limit: None,
            bucket_each: false,
        },
        Scenario {
            name: "one source, over its limit",
            sources: 1,
            limit: Some(limit),
            bucket_each: false,
        },
        Scenario {
            name: "32,768 sources",
            sources: 32_768,
            limit: Some(limit),
            bucket_each: false,
        },
        Scenario {
            name: "131,072 sources",
            sources: 131_072,
            limit: Some(limit),
            bucket_each: false,
        },
        Scenario {
            name: "32,768 sources, a bucket each (no sketch)",
            sources: 32_768,
            limit: Some(limit),
            bucket_each: true,
        },
        Scenario {
            name: "131,072 sources, a bucket each (no sketch; table churns)",
            sources: 131_072,
            limit: Some(limit),
            bucket_each: true,
        },
    ];
    let configs: Vec<Config> = scenarios
        .iter()
        .map(|s| {
            let mut config = base;
            if let Some(limit) = s.limit {
                limit.apply(&mut config);
            }
            if s.bucket_each {
                config.source_promote = 1;
            }
            config
        })
        .collect();

    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); scenarios.len()];
    let mut buckets = vec![0u64; scenarios.len()];
    for _ in 0..ROUNDS {
        for (i, (scenario, config)) in scenarios.iter().zip(&configs).enumerate() {
            let before = stats.read()?.sources_metered;
            samples[i].push(measure(config, scenario.sources)?);
            buckets[i] = stats.read()?.sources_metered - before;
        }
    }
    let ns: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
    let off = ns[0];

    println!(
        "## Per-source limiter: BPF_PROG_TEST_RUN, repeat {REPEAT}, median of {ROUNDS} \
         interleaved rounds\n"
    );
    println!(
        "The limiter runs at {:.1} M packets/s here, so the limit is set to {scaled_limit} SYN/s \
         per source: that load stands to it as a {:.0}k SYN/s flood to a limit of {LIMIT_PPS:.0} \
         SYN/s. Sketch window {} ms; bucket table {SOURCE_BUCKETS} entries.\n",
        packet_rate / 1e6,
        FLOOD_PPS / 1e3,
        SKETCH_WINDOW_NS / 1_000_000
    );
    println!("| sources | ns/packet | limiter ns | × one source | buckets made (last round) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let one = ns[1] - off;
    for ((scenario, ns), made) in scenarios.iter().zip(&ns).zip(&buckets) {
        let net = ns - off;
        println!(
            "| {} | {ns:.1} | {net:.1} | {} | {made} |",
            scenario.name,
            if scenario.limit.is_some() {
                format!("{:.2}", net / one)
            } else {
                "-".into()
            }
        );
    }
    println!(
        "\nMany sources against one, limiter alone: 32,768 {:.2}x, 131,072 {:.2}x (target: at \
         most 1.5x). A bucket per source instead: {:.2}x and {:.2}x.",
        (ns[2] - off) / one,
        (ns[3] - off) / one,
        (ns[4] - off) / one,
        (ns[5] - off) / one
    );
    Ok(())
}

fn syn_frame() -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
        .ipv4([198, 18, 0, 2], [198, 18, 0, 1], 64)
        .tcp(40000, 80, 7, 64240)
        .syn()
        .write(&mut frame, &[])
        .expect("frame");
    frame
}
