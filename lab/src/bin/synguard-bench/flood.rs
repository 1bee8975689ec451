//! `cargo xtask bench flood`: the same spoofed SYN flood against each contender in turn, in the
//! lab: no protection, the kernel's SYN cookies, nftables SYNPROXY, synguard, and two XDP
//! floors. For each: the server side's CPU cost per SYN, the rate absorbed flat out, and what
//! legitimate clients get at fixed offered loads. Every figure is the median of three runs,
//! with the spread; the headline is a ratio against kernel SYN cookies from the same run.
//!
//! Cost. On veth the receive path runs largely on the sender's CPU, so the only honest account
//! is the whole machine's: busy time (/proc/stat, all CPUs) during a flat-out flood divided by
//! the SYNs sent, minus the same figure for a drop floor on the same receive path, which
//! leaves the server side's own work: an XDP program that drops everything for XDP
//! contenders, a tc ingress program that drops everything for the kernel's own defences
//! (see `Contender::floor`).

use std::{fmt::Write as _, net::SocketAddr, path::Path, process::Command, thread, time::Duration};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf,
    programs::{SchedClassifier, TcAttachType, Xdp, XdpMode, tc},
};
use nix::sys::signal::Signal;
use synguard_lab::{
    HttpServer, Lab, LegitReport, SynShape, Synguard, run_bounded, run_legit_clients, syn_flood,
};

/// Runs per contender; SYNGUARD_BENCH_RUNS overrides it (1 for a quick look), and
/// SYNGUARD_BENCH_ONLY=NAME (a contender's short name, e.g. "synguard cookie") runs just that
/// one and prints its runs' figures without a table; SYNGUARD_BENCH_ONLY=bulk runs only the
/// established-connection comparison.
fn runs() -> usize {
    std::env::var("SYNGUARD_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3)
}
const FLAT_OUT: Duration = Duration::from_secs(3);
/// Rounds of the bulk-transfer comparison (each a fresh lab per contender).
const BULK_ROUNDS: usize = 5;
const LOADS: [u64; 3] = [50_000, 150_000, 400_000];
const LOAD_TIME: Duration = Duration::from_secs(4);
/// Legit clients: a request every 5 ms for 2 s, each allowed 1 s.
const LEGIT: u32 = 400;
const LEGIT_INTERVAL: Duration = Duration::from_millis(5);
const LEGIT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Contender {
    None,
    KernelCookies1,
    KernelCookies2,
    Synproxy,
    SynguardCookie,
    SynguardAuto,
    DropFloor,
    StackDropFloor,
    AnswerFloor,
}

impl Contender {
    const ALL: [Contender; 9] = [
        Contender::DropFloor,
        Contender::StackDropFloor,
        Contender::AnswerFloor,
        Contender::None,
        Contender::KernelCookies1,
        Contender::KernelCookies2,
        Contender::Synproxy,
        Contender::SynguardCookie,
        Contender::SynguardAuto,
    ];

    fn name(self) -> &'static str {
        match self {
            Contender::None => "no protection (tcp_syncookies=0)",
            Contender::KernelCookies1 => "kernel SYN cookies (tcp_syncookies=1)",
            Contender::KernelCookies2 => "kernel SYN cookies (tcp_syncookies=2)",
            Contender::Synproxy => "nftables SYNPROXY",
            Contender::SynguardCookie => "synguard, cookie mode",
            Contender::SynguardAuto => "synguard, auto mode",
            Contender::DropFloor => "XDP drop floor",
            Contender::StackDropFloor => "stack drop floor (tc ingress drop, no XDP)",
            Contender::AnswerFloor => "XDP answer floor (swap, XDP_TX)",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Contender::None => "none",
            Contender::KernelCookies1 => "kernel=1",
            Contender::KernelCookies2 => "kernel=2",
            Contender::Synproxy => "SYNPROXY",
            Contender::SynguardCookie => "synguard cookie",
            Contender::SynguardAuto => "synguard auto",
            Contender::DropFloor => "drop floor",
            Contender::StackDropFloor => "stack drop floor",
            Contender::AnswerFloor => "answer floor",
        }
    }

    /// Whether it is a server at all (the floors only measure cost).
    fn serves(self) -> bool {
        !matches!(
            self,
            Contender::DropFloor | Contender::StackDropFloor | Contender::AnswerFloor
        )
    }

    /// The drop floor on the same receive path, whose cost is subtracted from this one's:
    /// on veth, a device with an XDP program copies into a page-pool page each arriving frame
    /// that is shared or has less than XDP's 256 bytes of headroom, as all the generator's
    /// frames have (veth_convert_skb_to_xdp_buff() in drivers/net/veth.c); a device without
    /// one does not, so the kernel's own defences are measured against a floor without XDP.
    fn floor(self) -> Contender {
        match self {
            Contender::None
            | Contender::KernelCookies1
            | Contender::KernelCookies2
            | Contender::Synproxy
            | Contender::StackDropFloor => Contender::StackDropFloor,
            Contender::SynguardCookie
            | Contender::SynguardAuto
            | Contender::DropFloor
            | Contender::AnswerFloor => Contender::DropFloor,
        }
    }
}

/// What is set up for a contender; dropping it tears it down.
enum Setup {
    Nothing,
    Synguard(Synguard),
    Xdp(Ebpf),
    Tc(Ebpf),
}

fn set_up(lab: &Lab, contender: Contender) -> Result<Setup> {
    let sysctl = |key, value| lab.server.set_sysctl(key, value);
    Ok(match contender {
        Contender::None => {
            sysctl("net.ipv4.tcp_syncookies", "0")?;
            Setup::Nothing
        }
        Contender::KernelCookies1 => {
            sysctl("net.ipv4.tcp_syncookies", "1")?;
            Setup::Nothing
        }
        Contender::KernelCookies2 => {
            sysctl("net.ipv4.tcp_syncookies", "2")?;
            Setup::Nothing
        }
        Contender::Synproxy => {
            // As the nftables wiki's "Synproxy" page has it: SYNs to the port untracked in
            // raw prerouting, then SYNPROXY for untracked and invalid packets, with the
            // sysctls it asks for.
            sysctl("net.ipv4.tcp_syncookies", "1")?;
            sysctl("net.ipv4.tcp_timestamps", "1")?;
            let rules = r#"table ip synguard_bench {
    chain prerouting {
        type filter hook prerouting priority raw; policy accept;
        tcp dport 80 tcp flags syn notrack
    }
    chain input {
        type filter hook input priority filter; policy accept;
        tcp dport 80 ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm
        ct state invalid drop
    }
}
"#;
            let path = std::env::temp_dir().join(format!("{}-synproxy.nft", lab.server.name));
            std::fs::write(&path, rules)?;
            let out = lab
                .server
                .exec("nft", &["-f", path.to_str().context("path")?]);
            let _ = std::fs::remove_file(&path);
            out.context("nft -f (Debian package nftables)")?;
            sysctl("net.netfilter.nf_conntrack_tcp_loose", "0")?;
            Setup::Nothing
        }
        Contender::SynguardCookie => {
            Setup::Synguard(Synguard::start(&lab.server, &["--mode", "cookie"])?)
        }
        Contender::SynguardAuto => {
            Setup::Synguard(Synguard::start(&lab.server, &["--mode", "auto"])?)
        }
        Contender::DropFloor => Setup::Xdp(attach(lab, "bench_drop")?),
        Contender::AnswerFloor => Setup::Xdp(attach(lab, "bench_floor")?),
        Contender::StackDropFloor => Setup::Tc(attach_tc(lab, "bench_tc_drop")?),
    })
}

fn attach(lab: &Lab, name: &str) -> Result<Ebpf> {
    let mut ebpf = Ebpf::load(synguard::datapath::objects::LAB)?;
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .context(name.to_string())?
        .try_into()?;
    program.load()?;
    let iface = lab.server.iface.clone();
    lab.server
        .enter(move || program.attach(&iface, XdpMode::Driver))??;
    Ok(ebpf)
}

/// Attaches the lab object's tc classifier `name` at the server end's ingress.
fn attach_tc(lab: &Lab, name: &str) -> Result<Ebpf> {
    let mut ebpf = Ebpf::load(synguard::datapath::objects::LAB)?;
    let program: &mut SchedClassifier = ebpf
        .program_mut(name)
        .context(name.to_string())?
        .try_into()?;
    program.load()?;
    let iface = lab.server.iface.clone();
    lab.server.enter(move || -> Result<()> {
        tc::qdisc_add_clsact(&iface)?;
        program.attach(&iface, TcAttachType::Ingress)?;
        Ok(())
    })??;
    Ok(ebpf)
}

/// The XDP program's (run seconds, runs) from the kernel's BPF statistics, if it has one.
fn program_stats(setup: &Setup) -> Result<Option<(f64, u64)>> {
    Ok(match setup {
        Setup::Synguard(sg) => {
            let m = sg.metrics()?;
            Some((
                m.sum("synguard_program_run_seconds_total", &[]),
                m.sum("synguard_program_runs_total", &[]) as u64,
            ))
        }
        Setup::Xdp(ebpf) => ebpf.programs().find_map(|(_, p)| {
            let info = p.info().ok()?;
            Some((info.run_time().as_secs_f64(), info.run_count()))
        }),
        Setup::Nothing | Setup::Tc(_) => None,
    })
}

/// kernel.bpf_stats_enabled (global) on for the benchmark, put back after.
pub(crate) struct BpfStats(String);

impl BpfStats {
    pub(crate) fn enable() -> Result<BpfStats> {
        const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";
        let before = std::fs::read_to_string(PATH)?.trim().to_string();
        std::fs::write(PATH, "1")?;
        Ok(BpfStats(before))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.0);
    }
}

fn tear_down(setup: Setup) -> Result<()> {
    match setup {
        Setup::Synguard(sg) => {
            sg.stop(Signal::SIGTERM)?;
        }
        Setup::Xdp(ebpf) | Setup::Tc(ebpf) => drop(ebpf),
        Setup::Nothing => {}
    }
    Ok(())
}

/// Whole-machine busy and total jiffies (/proc/stat, first line).
fn cpu_jiffies() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .context("empty /proc/stat")?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// One run of one contender.
#[derive(Clone, Default)]
struct Run {
    /// Whole-machine busy ns per SYN during the flat-out flood.
    machine_ns: f64,
    /// SYNs per second sent flat out, and the share of the machine that was busy.
    rate: f64,
    busy_share: f64,
    /// The generator thread's CPU share (it also runs much of the veth receive path).
    generator_share: f64,
    /// The XDP program's own run time per packet (kernel BPF statistics), for XDP contenders.
    program_ns: Option<f64>,
    /// Legit requests completed per second without a flood, and at each load.
    unloaded: Option<LegitSummary>,
    loaded: Vec<Option<(f64, LegitSummary)>>,
}

#[derive(Clone, Copy, Default)]
struct LegitSummary {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn summary(report: &LegitReport, seconds: f64) -> LegitSummary {
    let ms = |q| {
        report
            .quantile(q)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    LegitSummary {
        per_second: f64::from(report.succeeded) / seconds,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
    }
}

fn measure(contender: Contender) -> Result<Run> {
    let lab = Lab::new()?;
    let _http = HttpServer::start(&lab.server, 80)?;
    let setup = set_up(&lab, contender)?;
    let target: SocketAddr = (lab.server.ipv4, 80).into();
    let legit_seconds = LEGIT as f64 * LEGIT_INTERVAL.as_secs_f64();
    let legit = || run_legit_clients(&lab.client, target, LEGIT, LEGIT_INTERVAL, LEGIT_TIMEOUT);
    let mut run = Run::default();

    if contender.serves() {
        run.unloaded = Some(summary(&legit()?, legit_seconds));
    }
    // Flat out: as fast as the generator goes, for a fixed time.
    let stats_before = program_stats(&setup)?;
    let (busy0, total0) = cpu_jiffies()?;
    let flood = syn_flood(&lab, 80, u64::MAX, None, SynShape::Bare, FLAT_OUT)?;
    let (busy1, total1) = cpu_jiffies()?;
    if let (Some((t0, n0)), Some((t1, n1))) = (stats_before, program_stats(&setup)?) {
        run.program_ns = Some((t1 - t0) * 1e9 / (n1 - n0).max(1) as f64);
    }
    let tick_ns = 1e9 / 100.0; // USER_HZ
    run.machine_ns = (busy1 - busy0) as f64 * tick_ns / flood.sent.max(1) as f64;
    run.rate = flood.rate();
    run.busy_share = (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64;
    run.generator_share = flood.cpu.as_secs_f64() / flood.elapsed.as_secs_f64();

    if contender.serves() {
        for load in LOADS {
            // Let the previous flood's state drain (SYN queues, conntrack, timers).
            thread::sleep(Duration::from_millis(500));
            let result = thread::scope(|scope| -> Result<(f64, LegitSummary)> {
                let flood = scope.spawn(|| {
                    syn_flood(
                        &lab,
                        80,
                        load * LOAD_TIME.as_secs(),
                        Some(load),
                        SynShape::Bare,
                        LOAD_TIME * 2,
                    )
                });
                thread::sleep(Duration::from_millis(500));
                let report = legit()?;
                let flood = flood.join().expect("flood thread")?;
                Ok((flood.rate(), summary(&report, legit_seconds)))
            })?;
            run.loaded.push(Some(result));
        }
    }
    tear_down(setup)?;
    Ok(run)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// "median (min–max)".
fn spread(values: &[f64], decimals: usize) -> String {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return "-".into();
    }
    let m = median(&mut v);
    format!(
        "{m:.decimals$} ({:.decimals$}-{:.decimals$})",
        v[0],
        v[v.len() - 1]
    )
}

/// Established connections, no flood: synguard against an XDP_PASS-only program, in
/// interleaved rounds so the machine's drift hits each alike; each share is the median of the
/// rounds' own ratios.
fn bulk_table() -> Result<String> {
    let attached = [
        None,
        Some(Contender::SynguardAuto),
        Some(Contender::SynguardCookie),
    ];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); attached.len()];
    for round in 0..BULK_ROUNDS {
        eprintln!("bulk round {}/{BULK_ROUNDS}", round + 1);
        for (which, values) in attached.iter().zip(results.iter_mut()) {
            values.push(bulk_throughput(*which)?);
        }
    }
    let mut md = format!(
        "\n## Established connections, no flood\n\nA 3 s bulk upload to the server, with an \
         XDP program that only passes (the reference) and with synguard attached; \
         {BULK_ROUNDS} interleaved rounds, the share being the median of each round's ratio \
         to the reference.\n\n| attached | MB/s | share of the reference |\n\
         | --- | ---: | ---: |\n"
    );
    for (which, values) in attached.iter().zip(&results) {
        let shares: Vec<f64> = values
            .iter()
            .zip(&results[0])
            .map(|(v, reference)| 100.0 * v / reference)
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} % |",
            which.map_or("XDP_PASS only", |c| c.name()),
            spread(&values.iter().map(|b| b / 1e6).collect::<Vec<_>>(), 0),
            spread(&shares, 1)
        );
    }
    Ok(md)
}

/// Pins the calling thread to `cpu` (modulo the CPUs there are). The bulk transfer's sender
/// and receiver each keep one CPU, the same for every contender: left to the scheduler,
/// whether they share one moved the throughput by a quarter from run to run.
fn pin_to_cpu(cpu: usize) -> Result<()> {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu % cpus)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
    Ok(())
}

/// What an established connection gets: bytes per second of a 3 s bulk upload to the server,
/// with `contender` attached and no flood.
fn bulk_throughput(contender: Option<Contender>) -> Result<f64> {
    use std::{
        io::{Read, Write},
        net::{TcpListener, TcpStream},
        time::Instant,
    };
    let lab = Lab::new()?;
    let setup = match contender {
        Some(c) => set_up(&lab, c)?,
        // The reference: an XDP program that passes everything.
        None => Setup::Xdp(attach(&lab, "lab_pass")?),
    };
    let listener = lab
        .server
        .enter(|| TcpListener::bind(("0.0.0.0", 5001)))??;
    let target: SocketAddr = (lab.server.ipv4, 5001).into();
    let received = thread::scope(|scope| -> Result<u64> {
        let server = scope.spawn(|| -> Result<u64> {
            pin_to_cpu(1)?;
            let (mut stream, _) = listener.accept()?;
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0u64;
            loop {
                match stream.read(&mut buf)? {
                    0 => return Ok(total),
                    n => total += n as u64,
                }
            }
        });
        lab.client.enter(|| -> Result<()> {
            pin_to_cpu(0)?;
            let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
            let buf = vec![0x5au8; 1 << 16];
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(3) {
                stream.write_all(&buf)?;
            }
            Ok(())
        })??;
        server.join().expect("bulk receiver")
    })?;
    tear_down(setup)?;
    Ok(received as f64 / 3.0)
}

pub fn run(out_dir: &Path) -> Result<()> {
    synguard_lab::require_root()?;
    if run_bounded(Command::new("nft").arg("--version"), Duration::from_secs(5)).is_err() {
        bail!("nft is missing (Debian package nftables); run `cargo xtask setup`");
    }
    // The XDP programs' own run time, to split the server side's cost (costs ~20 ns a run).
    let _stats = BpfStats::enable()?;
    let mut runs: Vec<(Contender, Vec<Run>)> =
        Contender::ALL.iter().map(|c| (*c, Vec::new())).collect();
    let rounds = self::runs();
    let only = std::env::var("SYNGUARD_BENCH_ONLY").ok();
    if only.as_deref() == Some("bulk") {
        println!("{}", bulk_table()?);
        return Ok(());
    }
    if let Some(only) = &only
        && !Contender::ALL.iter().any(|c| c.short() == only)
    {
        let names: Vec<&str> = Contender::ALL.iter().map(|c| c.short()).collect();
        bail!("SYNGUARD_BENCH_ONLY={only:?} names no contender; one of {names:?}, or \"bulk\"");
    }
    for round in 0..rounds {
        for (contender, results) in runs.iter_mut() {
            if only.as_ref().is_some_and(|only| only != contender.short()) {
                continue;
            }
            eprintln!("run {}/{rounds}: {}", round + 1, contender.name());
            let run = measure(*contender)?;
            eprintln!(
                "  flat out: {:.0} SYN/s, machine {:.0} ns/SYN, program {}",
                run.rate,
                run.machine_ns,
                run.program_ns
                    .map_or("-".to_string(), |ns| format!("{ns:.0} ns/packet"))
            );
            results.push(run);
        }
    }
    // One contender alone is a quick look, not a comparison: no table.
    if only.is_some() {
        return Ok(());
    }
    let floor = |c: Contender| {
        let mut v: Vec<f64> = runs
            .iter()
            .find(|(x, _)| *x == c)
            .map(|(_, r)| r.iter().map(|r| r.machine_ns).collect())
            .unwrap_or_default();
        median(&mut v)
    };
    let (drop_floor, stack_floor) = (
        floor(Contender::DropFloor),
        floor(Contender::StackDropFloor),
    );
    // Each contender less the drop floor on its own receive path.
    let server_ns = |c: Contender, r: &Run| (r.machine_ns - floor(c.floor())).max(0.0);
    let median_server = |c: Contender| {
        let mut v: Vec<f64> = runs
            .iter()
            .find(|(x, _)| *x == c)
            .map(|(_, r)| r.iter().map(|r| server_ns(c, r)).collect())
            .unwrap_or_default();
        median(&mut v)
    };
    let kernel = median_server(Contender::KernelCookies1);
    let answer = median_server(Contender::AnswerFloor);

    let mut md = String::new();
    let _ = writeln!(
        md,
        "# SYN flood benchmark\n\n`cargo xtask bench flood`: {rounds} runs per contender, \
         median (min-max). Machine: {} CPUs. Spoofed SYNs from 32,768 sources in \
         198.18.128.0/17, over veth between two namespaces.\n",
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(
        md,
        "## Cost and capacity, flat out for {} s\n\nServer-side ns per SYN: the whole \
         machine's busy time per SYN, minus that of the drop floor on the same receive path, \
         which is the generator's and the receive path's: the XDP drop floor \
         ({drop_floor:.0} ns) for XDP contenders, the stack drop floor ({stack_floor:.0} ns, a \
         tc ingress program that drops) for the kernel's own defences, which run without XDP. \
         On veth, a device with an XDP program copies each arriving frame that lacks XDP's \
         headroom, as the generator's do, into a page for it ({:.0} ns a frame more here), \
         which a NIC driver does not; measured against the XDP \
         floor alone, the kernel's defences would look cheaper by that much.\n",
        FLAT_OUT.as_secs(),
        drop_floor - stack_floor
    );
    let _ = writeln!(
        md,
        "| contender | server ns/SYN | floor | x kernel cookies | x answer floor | of which \
         XDP program | SYN/s absorbed | machine busy | generator thread |\n\
         | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (contender, results) in &runs {
        let ns: Vec<f64> = results.iter().map(|r| server_ns(*contender, r)).collect();
        let m = median_server(*contender);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.2} | {:.2} | {} | {} | {} | {} |",
            contender.name(),
            spread(&ns, 0),
            match contender.floor() {
                Contender::StackDropFloor => "stack",
                _ => "XDP",
            },
            m / kernel,
            m / answer,
            spread(
                &results
                    .iter()
                    .filter_map(|r| r.program_ns)
                    .collect::<Vec<_>>(),
                0
            ),
            spread(&results.iter().map(|r| r.rate).collect::<Vec<_>>(), 0),
            spread(
                &results
                    .iter()
                    .map(|r| r.busy_share * 100.0)
                    .collect::<Vec<_>>(),
                0
            ) + " %",
            spread(
                &results
                    .iter()
                    .map(|r| r.generator_share * 100.0)
                    .collect::<Vec<_>>(),
                0
            ) + " %",
        );
    }
    let _ = writeln!(
        md,
        "\n## Service under flood\n\nA client makes a request every 5 ms for 2 s, each \
         allowed 1 s, with no flood and at each offered load; completed requests per second \
         as a share of the same contender's unloaded figure, and p50/p99 latency.\n"
    );
    let mut header = String::from("| contender | unloaded req/s |");
    let mut rule = String::from("| --- | ---: |");
    for load in LOADS {
        let _ = write!(header, " {}k: kept | p50 / p99 ms |", load / 1000);
        rule.push_str(" ---: | ---: |");
    }
    let _ = writeln!(md, "{header}\n{rule}");
    for (contender, results) in runs.iter().filter(|(c, _)| c.serves()) {
        let unloaded: Vec<f64> = results
            .iter()
            .filter_map(|r| r.unloaded.map(|u| u.per_second))
            .collect();
        let mut line = format!("| {} | {} |", contender.name(), spread(&unloaded, 0));
        for i in 0..LOADS.len() {
            let kept: Vec<f64> = results
                .iter()
                .filter_map(|r| {
                    let (_, l) = r.loaded.get(i).copied().flatten()?;
                    Some(100.0 * l.per_second / r.unloaded?.per_second)
                })
                .collect();
            let mut p50: Vec<f64> = results
                .iter()
                .filter_map(|r| Some(r.loaded.get(i).copied().flatten()?.1.p50_ms))
                .collect();
            let mut p99: Vec<f64> = results
                .iter()
                .filter_map(|r| Some(r.loaded.get(i).copied().flatten()?.1.p99_ms))
                .collect();
            let _ = write!(
                line,
                " {} % | {:.1} / {:.1} |",
                spread(&kept, 0),
                median(&mut p50),
                median(&mut p99)
            );
        }
        let _ = writeln!(md, "{line}");
    }
    let offered: Vec<String> = LOADS
        .iter()
        .enumerate()
        .map(|(i, load)| {
            let mut rates: Vec<f64> = runs
                .iter()
                .flat_map(|(_, r)| r.iter())
                .filter_map(|r| Some(r.loaded.get(i).copied().flatten()?.0))
                .collect();
            format!("{}k offered: {:.0} sent", load / 1000, median(&mut rates))
        })
        .collect();
    let _ = writeln!(
        md,
        "\nLoads as the generator achieved them (median): {}.",
        offered.join("; ")
    );
    md.push_str(&bulk_table()?);
    let synguard = median_server(Contender::SynguardCookie);
    let _ = writeln!(
        md,
        "\nHeadline: synguard (cookie mode) costs {synguard:.0} ns per SYN on the server side, \
         {:.2}x kernel SYN cookies ({kernel:.0} ns), and {:.2}x the answer floor \
         ({answer:.0} ns). Against the XDP drop floor alone, kernel SYN cookies would come \
         to {:.0} ns, and synguard to {:.2}x them.",
        synguard / kernel,
        synguard / answer,
        kernel - (drop_floor - stack_floor),
        synguard / (kernel - (drop_floor - stack_floor))
    );
    println!("{md}");
    std::fs::create_dir_all(out_dir)?;
    std::fs::write(out_dir.join("bench-flood.md"), &md)?;
    let chart = chart(&runs, &server_ns);
    std::fs::write(out_dir.join("bench-flood.svg"), &chart)?;
    let png = out_dir.join("bench-flood.png");
    let status = Command::new("rsvg-convert")
        .arg("-o")
        .arg(&png)
        .arg(out_dir.join("bench-flood.svg"))
        .status()
        .context("rsvg-convert (Debian package librsvg2-bin; `cargo xtask setup`)")?;
    if !status.success() {
        bail!("rsvg-convert failed");
    }
    eprintln!("wrote {}", out_dir.join("bench-flood.md").display());
    eprintln!("wrote {}", png.display());
    Ok(())
}

/// Two bar charts: server-side ns per SYN, and the legit throughput kept at 150k SYN/s.
fn chart(runs: &[(Contender, Vec<Run>)], server_ns: &dyn Fn(Contender, &Run) -> f64) -> String {
    let width = 760.0;
    let bar_h = 22.0;
    let left = 250.0;
    let plot_w = width - left - 90.0;
    let rows: Vec<(&str, f64, Option<f64>)> = runs
        .iter()
        .map(|(c, results)| {
            let mut ns: Vec<f64> = results.iter().map(|r| server_ns(*c, r)).collect();
            let kept: Vec<f64> = results
                .iter()
                .filter_map(|r| {
                    let (_, l) = r.loaded.get(1).copied().flatten()?;
                    Some(100.0 * l.per_second / r.unloaded?.per_second)
                })
                .collect();
            let kept = (!kept.is_empty()).then(|| {
                let mut k = kept.clone();
                median(&mut k)
            });
            (c.short(), median(&mut ns), kept)
        })
        .collect();
    let max_ns = rows.iter().map(|r| r.1).fold(1.0f64, f64::max);
    let section = |title: &str,
                   top: f64,
                   values: &[(&str, f64, String)],
                   max: f64,
                   svg: &mut String| {
        let _ = writeln!(
            svg,
            "<text x=\"10\" y=\"{}\" font-weight=\"bold\">{title}</text>",
            top - 8.0
        );
        for (i, (name, value, label)) in values.iter().enumerate() {
            let y = top + i as f64 * (bar_h + 6.0);
            let w = (value / max * plot_w).max(1.0);
            let color = if name.starts_with("synguard") {
                "#d62728"
            } else {
                "#1f77b4"
            };
            let _ = writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{name}</text>\n\
                 <rect x=\"{left}\" y=\"{y}\" width=\"{w:.1}\" height=\"{bar_h}\" fill=\"{color}\"/>\n\
                 <text x=\"{:.1}\" y=\"{}\">{label}</text>",
                left - 8.0,
                y + 15.0,
                left + w + 6.0,
                y + 15.0
            );
        }
    };
    let cost: Vec<(&str, f64, String)> = rows
        .iter()
        .map(|(n, ns, _)| (*n, *ns, format!("{ns:.0} ns")))
        .collect();
    let kept: Vec<(&str, f64, String)> = rows
        .iter()
        .filter_map(|(n, _, k)| Some((*n, (*k)?, format!("{:.0} %", (*k)?))))
        .collect();
    let height = 60.0 + (cost.len() + kept.len()) as f64 * (bar_h + 6.0) + 60.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let top1 = 40.0;
    section(
        "Server-side CPU per SYN, flat out (lower is better)",
        top1,
        &cost,
        max_ns,
        &mut svg,
    );
    let top2 = top1 + cost.len() as f64 * (bar_h + 6.0) + 50.0;
    section(
        "Legit requests kept under 150k SYN/s (share of unloaded; higher is better)",
        top2,
        &kept,
        100.0,
        &mut svg,
    );
    svg.push_str("</svg>\n");
    svg
}
