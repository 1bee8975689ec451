//! `cargo xtask bench prog`: nanoseconds per packet for each path through synguard's XDP
//! program, measured in the kernel with BPF_PROG_TEST_RUN, side by side with a floor program
//! that only swaps addresses and returns XDP_TX, in one run.
//!
//! Method. BPF_PROG_TEST_RUN with `repeat` reruns a program on one buffer without restoring it
//! (bpf_test_run() in net/bpf/test_run.c; live-frames mode does not rewrite page contents
//! either, Documentation/bpf/bpf_prog_run.rst). So warm, repeated runs are taken with
//! `bench_synguard`, the lab object's copy of synguard's pipeline that stops short of turning
//! an answered SYN into a SYN-ACK; every other path is the product's code as is. The cost of
//! that last step, and of the stamping cookie helper (which runs once a second, so cannot be
//! repeated), come from single runs on fresh frames, compared with single runs of the same
//! path without it.
//!
//! Everything runs on a thread inside a lab namespace with a listener on port 80 and an
//! established connection, since the program looks sockets up in the caller's namespace.

use std::{
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd,
};

use anyhow::{Context, Result};
use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray, PerCpuValues},
    programs::{TestRun, TestRunOptions, Xdp},
};
use etherparse::{PacketBuilder, TcpOptionElement};
use synguard::datapath::maps::{ControlMaps, FactsMaps};
use synguard_common::{
    Action, Config, Mode, OWNERS_MAP, OWNERS_STATE_MAP, PROGRAM_NAME, Reason, STAMP_SLOTS,
    STAMPS_MAP,
    config::flags,
    owners::{self, OwnerBits, OwnersState},
};
use synguard_lab::Lab;

mod dump;
mod flood;
mod limiter;

/// Repeated runs: rounds interleaved across paths, so drift on a noisy machine hits every
/// path alike; the median round counts.
const ROUNDS: usize = 7;
const REPEAT: u32 = 200_000;
/// Single runs per path.
const SINGLE_RUNS: usize = 20_000;

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0xc6, 0x12, 0, 2];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0xc6, 0x12, 0, 1];
const CLIENT: [u8; 4] = [198, 18, 0, 2];
const SERVER: [u8; 4] = [198, 18, 0, 1];
/// A source that owns no socket here, as a spoofed flood's do.
const STRANGER: [u8; 4] = [198, 18, 200, 1];
const CLIENT_V6: [u8; 16] = [0xfd, 0, 1, 0x98, 0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const SERVER_V6: [u8; 16] = [0xfd, 0, 1, 0x98, 0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// The IPv6 rows' listener.
const V6_PORT: u16 = 8080;

fn main() -> Result<()> {
    let what = std::env::args().nth(1).unwrap_or_else(|| "prog".into());
    anyhow::ensure!(
        matches!(what.as_str(), "prog" | "limiter" | "flood" | "dump"),
        "unknown benchmark '{what}'; available: prog, limiter, flood, dump"
    );
    if what == "dump" {
        return dump::run();
    }
    if what == "limiter" {
        return limiter::run();
    }
    if what == "flood" {
        let out = std::env::args().nth(2).unwrap_or_else(|| "docs".into());
        return flood::run(std::path::Path::new(&out));
    }
    let lab = Lab::new()?;
    lab.server.set_sysctl("net.ipv4.tcp_syncookies", "2")?;
    lab.server.set_sysctl("net.ipv4.tcp_timestamps", "2")?;
    // The client's address on the server's loopback too, for one established connection.
    lab.server
        .exec("ip", &["addr", "add", "198.18.0.2/32", "dev", "lo"])?;
    let iface = lab.server.iface.clone();
    lab.server.enter(move || run(&iface))?
}

/// A row of the warm table: the program and frame it runs, and the action that proves the
/// frame took the path the row names.
struct WarmPath {
    name: &'static str,
    what: &'static str,
    prog: Prog,
    frame: Vec<u8>,
    action: Action,
    /// Run with the owner filter disarmed, as before the controller's first rebuild: every
    /// SYN and ACK is looked up, and no connection is remembered (`established.rs`).
    disarmed: bool,
}

/// Which program a measurement runs.
#[derive(Clone, Copy)]
enum Prog {
    Synguard,
    BenchSynguard,
    Floor,
    KernelPart,
    LookupPart,
    CookiePart,
    Pass,
}

struct Programs {
    synguard: Ebpf,
    lab: Ebpf,
}

impl Programs {
    fn xdp(&mut self, which: Prog) -> Result<&mut Xdp> {
        let (ebpf, name) = match which {
            Prog::Synguard => (&mut self.synguard, PROGRAM_NAME),
            Prog::BenchSynguard => (&mut self.lab, "bench_synguard"),
            Prog::Floor => (&mut self.lab, "bench_floor"),
            Prog::KernelPart => (&mut self.lab, "bench_kernel_part"),
            Prog::LookupPart => (&mut self.lab, "bench_lookup_part"),
            Prog::CookiePart => (&mut self.lab, "bench_cookie_part"),
            Prog::Pass => (&mut self.lab, "lab_pass"),
        };
        Ok(ebpf.program_mut(name).context(name)?.try_into()?)
    }

    /// Mean ns per run over `repeat` runs on one buffer.
    fn repeated(&mut self, which: Prog, frame: &[u8], repeat: u32) -> Result<f64> {
        let result = self.xdp(which)?.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })?;
        Ok(result.duration.as_nanos() as f64)
    }

    /// The kernel's timing of one run on a fresh copy of `frame`.
    fn single(&mut self, which: Prog, frame: &[u8]) -> Result<f64> {
        let result = self.xdp(which)?.test_run(TestRunOptions {
            data_in: Some(frame),
            ..Default::default()
        })?;
        Ok(result.duration.as_nanos() as f64)
    }
}

fn run(iface: &str) -> Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", 80))?;
    // IPv6 SYNs go to a listener of their own, so port 80's rows stay as they were.
    let _listener_v6 = TcpListener::bind(("::", V6_PORT))?;
    let established = connect_from(CLIENT, SERVER, 80)?;
    let client_port = established.local_addr()?.port();
    let _accepted = listener.accept()?;

    let config = Config {
        mode: Mode::Cookie as u32,
        flags: flags::ALL_PORTS | flags::TIMESTAMPS,
        ..Config::DEFAULT
    };
    let mut programs = Programs {
        synguard: Ebpf::load(synguard::datapath::objects::SYNGUARD)?,
        lab: Ebpf::load(synguard::datapath::objects::LAB)?,
    };
    // Taken maps must stay alive: their fds are what the programs are loaded against.
    let mut synguard_control = ControlMaps::take(&mut programs.synguard)?;
    let mut lab_control = ControlMaps::take(&mut programs.lab)?;
    // What the SYN-ACKs promise, for the namespace's interface, as the controller writes it.
    let _synguard_facts = FactsMaps::take_filled(&mut programs.synguard, iface)?;
    let _lab_facts = FactsMaps::take_filled(&mut programs.lab, iface)?;
    synguard_control.set_config(&config)?;
    lab_control.set_config(&config)?;
    // 32-byte slots (`StampSlot` in xdp-ebpf/src/cookie.rs); all zero is "never stamped".
    let mut stamps: PerCpuArray<MapData, [u64; 4]> =
        PerCpuArray::try_from(programs.synguard.take_map(STAMPS_MAP).context("stamps")?)?;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    let synguard_stats = synguard::datapath::maps::StatsMap::take(&mut programs.synguard)?;
    // The owner filter, armed as the controller's first rebuild leaves it: the client has a
    // socket here (the established connection), so its bit is set; nothing else is.
    let _synguard_owners = arm_owner_filter(&mut programs.synguard, &[CLIENT])?;
    let mut lab_owners = arm_owner_filter(&mut programs.lab, &[CLIENT])?;
    for which in [
        Prog::Synguard,
        Prog::BenchSynguard,
        Prog::Floor,
        Prog::KernelPart,
        Prog::LookupPart,
        Prog::CookiePart,
        Prog::Pass,
    ] {
        programs.xdp(which)?.load()?;
    }

    let syn = |port| tcp_frame(40000, port, true, false, 0, &LINUX);
    // From a source that owns no socket: the fast path's frames.
    let stranger_syn = with_source(&syn(80), STRANGER);
    let stranger_ack = with_source(&tcp_frame(40001, 80, false, true, 12345, &[]), STRANGER);
    let forged_ack = tcp_frame(40001, 80, false, true, 12345, &[]);
    let established_ack = tcp_frame(client_port, 80, false, true, 1, &[]);

    // Warm: repeated runs.
    let warm = [
        WarmPath {
            name: "harness",
            what: "XDP_PASS and nothing else: the measurement's own cost",
            prog: Prog::Pass,
            frame: syn(80),
            action: Action::Pass,
            disarmed: false,
        },
        WarmPath {
            name: "floor",
            what: "swap MACs, IPs and ports, XDP_TX",
            prog: Prog::Floor,
            frame: syn(80),
            action: Action::Tx,
            disarmed: false,
        },
        WarmPath {
            name: "non-TCP",
            what: "UDP: parse, count, pass",
            prog: Prog::BenchSynguard,
            frame: udp_frame(),
            action: Action::Pass,
            disarmed: false,
        },
        WarmPath {
            name: "passed SYN",
            what: "no listener: socket lookup misses, pass",
            prog: Prog::BenchSynguard,
            frame: syn(81),
            action: Action::Pass,
            disarmed: false,
        },
        WarmPath {
            name: "passed bare SYN",
            what: "the same without TCP options",
            prog: Prog::BenchSynguard,
            frame: tcp_frame(40000, 81, true, false, 0, &[]),
            action: Action::Pass,
            disarmed: false,
        },
        WarmPath {
            name: "cookie SYN",
            what: "source in the owner filter: listener looked up, raw cookie helper, SYN-ACK \
                   built; rewrite excluded",
            prog: Prog::BenchSynguard,
            frame: syn(80),
            action: Action::Tx,
            disarmed: false,
        },
        WarmPath {
            name: "cookie SYN, no lookup",
            what: "source not in the owner filter (a spoofed flood's): no lookup, raw cookie \
                   helper, SYN-ACK built; rewrite excluded",
            prog: Prog::BenchSynguard,
            frame: stranger_syn.clone(),
            action: Action::Tx,
            disarmed: false,
        },
        WarmPath {
            name: "kernel's share",
            what: "only the two helpers a cookie SYN needs: listener lookup, raw cookie helper",
            prog: Prog::KernelPart,
            frame: syn(80),
            action: Action::Tx,
            disarmed: false,
        },
        WarmPath {
            name: "listener lookup",
            what: "the kernel's share: bpf_skc_lookup_tcp (and release) alone",
            prog: Prog::LookupPart,
            frame: syn(80),
            action: Action::Tx,
            disarmed: false,
        },
        WarmPath {
            name: "cookie helper",
            what: "the kernel's share: bpf_tcp_raw_gen_syncookie_ipv4 alone",
            prog: Prog::CookiePart,
            frame: syn(80),
            action: Action::Tx,
            disarmed: false,
        },
        WarmPath {
            name: "ACK check",
            what: "no socket: cookie check fails, drop",
            prog: Prog::BenchSynguard,
            frame: forged_ack,
            action: Action::Drop,
            disarmed: false,
        },
        WarmPath {
            name: "ACK check, no lookup",
            what: "source not in the owner filter: cookie check fails without a lookup, drop",
            prog: Prog::BenchSynguard,
            frame: stranger_ack,
            action: Action::Drop,
            disarmed: false,
        },
        WarmPath {
            name: "established ACK",
            what: "lookup finds the connection, pass (owner filter disarmed, so not remembered)",
            prog: Prog::BenchSynguard,
            frame: established_ack.clone(),
            action: Action::Pass,
            disarmed: true,
        },
        WarmPath {
            name: "established ACK, known",
            what: "the connection this CPU found established: no lookup but one in 64, pass",
            prog: Prog::BenchSynguard,
            frame: established_ack,
            action: Action::Pass,
            disarmed: false,
        },
        WarmPath {
            name: "cookie SYN, IPv4 options",
            what: "the cookie SYN behind four NOPs of IPv4 options: options walked, plain reply",
            prog: Prog::BenchSynguard,
            frame: with_ipv4_options(&syn(80), &[1, 1, 1, 1]),
            action: Action::Tx,
            disarmed: false,
        },
        WarmPath {
            name: "cookie SYN, IPv6",
            what: "the cookie SYN over IPv6 (its own listener)",
            prog: Prog::BenchSynguard,
            frame: ipv6_syn(&[]),
            action: Action::Tx,
            disarmed: false,
        },
        WarmPath {
            name: "cookie SYN, IPv6 Destination Options",
            what: "the IPv6 cookie SYN behind a Destination Options header: walked by parse",
            prog: Prog::BenchSynguard,
            frame: ipv6_syn(&[60, 0, 1, 4, 0, 0, 0, 0]),
            action: Action::Tx,
            disarmed: false,
        },
    ];
    // Every warm path must take the way its row says, or its number means nothing.
    for path in &warm {
        set_armed(&mut lab_owners.1, !path.disarmed)?;
        let result = programs.xdp(path.prog)?.test_run(TestRunOptions {
            data_in: Some(&path.frame),
            ..Default::default()
        })?;
        anyhow::ensure!(
            result.return_value == path.action.xdp_code(),
            "warm path '{}' returned XDP action {}, expected {}",
            path.name,
            result.return_value,
            path.action.xdp_code()
        );
    }
    let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); warm.len()];
    for _ in 0..ROUNDS {
        for (i, path) in warm.iter().enumerate() {
            set_armed(&mut lab_owners.1, !path.disarmed)?;
            rounds[i].push(programs.repeated(path.prog, &path.frame, REPEAT)?);
        }
    }
    set_armed(&mut lab_owners.1, true)?;
    let warm_ns: Vec<f64> = rounds.iter_mut().map(|r| median(r)).collect();
    let ns_of = |name: &str| -> f64 {
        warm.iter()
            .position(|path| path.name == name)
            .map_or(f64::NAN, |i| warm_ns[i])
    };
    let floor = ns_of("floor");

    println!(
        "## Warm: BPF_PROG_TEST_RUN, repeat {REPEAT}, median of {ROUNDS} interleaved rounds\n"
    );
    println!("| path | ns/packet | × floor | what |");
    println!("| --- | ---: | ---: | --- |");
    for (path, ns) in warm.iter().zip(&warm_ns) {
        let (name, what) = (path.name, path.what);
        println!("| {name} | {ns:.1} | {:.2} | {what} |", ns / floor);
    }

    let (cookie_syn, kernel_part) = (ns_of("cookie SYN"), ns_of("kernel's share"));
    let (lookup, cookie_helper) = (ns_of("listener lookup"), ns_of("cookie helper"));
    println!(
        "\nThe kernel's share alone, {kernel_part:.0} ns, is {:.2} × floor (listener lookup \
         {:.2} ×, cookie helper {:.2} ×, each with the harness); synguard's own work on a \
         cookie SYN, {:.0} ns, is {:.2} × floor.",
        kernel_part / floor,
        lookup / floor,
        cookie_helper / floor,
        cookie_syn - kernel_part,
        (cookie_syn - kernel_part) / floor
    );

    let no_lookup = ns_of("cookie SYN, no lookup");
    println!(
        "Fast path: a cookie SYN from a source not in the owner filter {no_lookup:.0} ns, \
         {:.2} × the one that is looked up ({cookie_syn:.0} ns), {:.2} × floor (issue 17's \
         target: at most 170 ns); a forged ACK without the lookup {:.2} × the one with it.",
        no_lookup / cookie_syn,
        no_lookup / floor,
        ns_of("ACK check, no lookup") / ns_of("ACK check"),
    );

    println!(
        "An established ACK of a connection this CPU remembers {:.0} ns, {:.2} × the one that \
         is looked up ({:.0} ns).",
        ns_of("established ACK, known"),
        ns_of("established ACK, known") / ns_of("established ACK"),
        ns_of("established ACK"),
    );
    println!(
        "Behind headers: IPv4 options {:.2} × the plain cookie SYN; IPv6 Destination Options \
         {:.2} × the plain IPv6 cookie SYN (issue 16's target: at most 1.3 ×).",
        ns_of("cookie SYN, IPv4 options") / cookie_syn,
        ns_of("cookie SYN, IPv6 Destination Options") / ns_of("cookie SYN, IPv6"),
    );

    // Cold: single runs, for what cannot be repeated on one buffer.
    let mut raw = Vec::new();
    let mut stamped = Vec::new();
    let mut without_rewrite = Vec::new();
    let mut floor_single = Vec::new();
    let mut used_slot = None;
    for _ in 0..SINGLE_RUNS {
        raw.push(programs.single(Prog::Synguard, &syn(80))?);
        // The slot the benchmark's destination uses: the one the runs so far wrote.
        let slot = match used_slot {
            Some(slot) => slot,
            None => {
                let slot = (0..STAMP_SLOTS)
                    .find(|&i| {
                        stamps
                            .get(&i, 0)
                            .is_ok_and(|values| values.iter().any(|v| *v != [0; 4]))
                    })
                    .context("no stamp slot was written by a cookie SYN")?;
                *used_slot.insert(slot)
            }
        };
        stamps.set(slot, PerCpuValues::try_from(vec![[0u64; 4]; cpus])?, 0)?;
        stamped.push(programs.single(Prog::Synguard, &syn(80))?);
        without_rewrite.push(programs.single(Prog::BenchSynguard, &syn(80))?);
        floor_single.push(programs.single(Prog::Floor, &syn(80))?);
    }
    // The premise of the two columns: every other run stamped, the rest took the raw helper.
    let counted = synguard_stats.read()?;
    let (stamped_runs, raw_runs) = (
        counted.reason(Reason::CookieStamped),
        counted.reason(Reason::CookieRaw),
    );
    anyhow::ensure!(
        stamped_runs >= SINGLE_RUNS as u64 && raw_runs >= SINGLE_RUNS as u64 - 1,
        "expected {SINGLE_RUNS} stamped and raw cookie SYNs each, counted {stamped_runs} and \
         {raw_runs}"
    );
    let (raw, stamped) = (median(&mut raw), median(&mut stamped));
    let (without_rewrite, floor_single) = (median(&mut without_rewrite), median(&mut floor_single));
    let rewrite = raw - without_rewrite;
    println!("\n## Single runs on fresh frames (cold caches), median of {SINGLE_RUNS}\n");
    println!("| path | ns/packet | what |");
    println!("| --- | ---: | --- |");
    println!(
        "| cookie SYN, raw helper | {raw:.0} | the product program, SYN-ACK written and sent |"
    );
    println!(
        "| cookie SYN, stamping helper | {stamped:.0} | the same with bpf_tcp_gen_syncookie, as once a second |"
    );
    println!(
        "| cookie SYN without the rewrite | {without_rewrite:.0} | bench_synguard, as in the warm table |"
    );
    println!("| floor | {floor_single:.0} | |");
    println!(
        "\nThe raw helper saves {:.0} % of the stamping path ({raw:.0} vs {stamped:.0} ns).",
        100.0 * (stamped - raw) / stamped
    );
    let cookie_total = cookie_syn + rewrite.max(0.0);
    println!(
        "Rewrite (resize, headers, SYN-ACK copy): {rewrite:.0} ns cold. Cookie SYN warm with the \
         rewrite added: {cookie_total:.0} ns = {:.2} × floor.",
        cookie_total / floor
    );

    // Allow/deny lists: load time, and what a lookup adds per packet.
    let mut lists = synguard::datapath::maps::ListMaps::take(&mut programs.lab)?;
    let (mut allow, mut deny) = (Vec::new(), Vec::new());
    for i in 0..10_000u32 {
        let cidr: synguard::config::lists::Cidr =
            format!("198.18.{}.{}/32", 128 + i / 256, i % 256)
                .parse()
                .map_err(anyhow::Error::msg)?;
        if i % 3 == 0 {
            allow.push(cidr);
        } else {
            deny.push(cidr);
        }
    }
    let lists_config = synguard::config::lists::Lists::new(allow, deny)?;
    let started = std::time::Instant::now();
    lists.load(&lists_config)?;
    let load_time = started.elapsed();
    lab_control.set_config(&Config {
        flags: config.flags | flags::LISTS,
        ..config
    })?;
    let unlisted = udp_frame();
    let denied = {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
            .ipv4([198, 18, 128, 1], SERVER, 64)
            .udp(5353, 53)
            .write(&mut frame, b"benchmark")?;
        frame
    };
    let (mut on_unlisted, mut on_denied) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        on_unlisted.push(programs.repeated(Prog::BenchSynguard, &unlisted, REPEAT)?);
        on_denied.push(programs.repeated(Prog::BenchSynguard, &denied, REPEAT)?);
    }
    println!("\n## Allow/deny lists, 10,000 IPv4 entries\n");
    println!("Loaded in {:.1} ms.\n", load_time.as_secs_f64() * 1000.0);
    println!("| path | ns/packet | × floor |");
    println!("| --- | ---: | ---: |");
    for (name, samples) in [
        ("non-TCP, unlisted source", &mut on_unlisted),
        ("non-TCP, denied source: drop", &mut on_denied),
    ] {
        let ns = median(samples);
        println!("| {name} | {ns:.1} | {:.2} |", ns / floor);
    }
    Ok(())
}

/// A connection from `from` (an address of this namespace) to `to:port`: the frames the
/// benchmark crafts for it come from the client's address, so the socket must too, where
/// a plain connect would pick the server's own address as the source.
/// Arms `ebpf`'s owner filter with `owners`' bits in both generations, as a rebuild from a
/// socket table holding them would; the maps are returned to be kept alive.
fn arm_owner_filter(
    ebpf: &mut Ebpf,
    owners: &[[u8; 4]],
) -> Result<(Array<MapData, OwnerBits>, Array<MapData, OwnersState>)> {
    let mut bits_map: Array<MapData, OwnerBits> =
        Array::try_from(ebpf.take_map(OWNERS_MAP).context("owner filter")?)?;
    let mut state_map: Array<MapData, OwnersState> =
        Array::try_from(ebpf.take_map(OWNERS_STATE_MAP).context("owner state")?)?;
    let mut bits = OwnerBits::EMPTY;
    for owner in owners {
        bits.set(owners::bit_of_bytes(owner).context("an IPv4 address")?);
    }
    anyhow::ensure!(
        !bits.has(owners::bit_of_bytes(&STRANGER).context("an IPv4 address")?),
        "the stranger shares a bit with an owner; pick another"
    );
    bits_map.set(0, bits, 0)?;
    bits_map.set(1, bits, 0)?;
    state_map.set(
        0,
        OwnersState {
            armed: 1,
            active: 0,
            listener_epoch: 0,
            closes: 0,
        },
        0,
    )?;
    Ok((bits_map, state_map))
}

fn set_armed(state_map: &mut Array<MapData, OwnersState>, armed: bool) -> Result<()> {
    let state = state_map.get(&0, 0)?;
    state_map.set(
        0,
        OwnersState {
            armed: armed.into(),
            ..state
        },
        0,
    )?;
    Ok(())
}

/// `frame` (IPv4 TCP, no options) from another source, checksums redone.
fn with_source(frame: &[u8], source: [u8; 4]) -> Vec<u8> {
    let sliced = etherparse::SlicedPacket::from_ethernet(frame).expect("a frame this file built");
    let Some(etherparse::NetSlice::Ipv4(ip)) = sliced.net else {
        panic!("an IPv4 frame");
    };
    let Some(etherparse::TransportSlice::Tcp(tcp)) = sliced.transport else {
        panic!("a TCP frame");
    };
    let mut header = ip.header().to_header();
    header.source = source;
    let mut tcp_header = tcp.to_header();
    let payload = tcp.payload();
    let mut out = frame[..14].to_vec();
    tcp_header.checksum = tcp_header
        .calc_checksum_ipv4(&header, payload)
        .expect("a small segment");
    header.header_checksum = header.calc_header_checksum();
    header.write(&mut out).expect("writing to a Vec");
    tcp_header.write(&mut out).expect("writing to a Vec");
    out.extend_from_slice(payload);
    out
}

fn connect_from(from: [u8; 4], to: [u8; 4], port: u16) -> Result<TcpStream> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let [a, b, c, d] = from;
    bind(fd.as_raw_fd(), &SockaddrIn::new(a, b, c, d, 0)).context("binding the client end")?;
    let [a, b, c, d] = to;
    connect(fd.as_raw_fd(), &SockaddrIn::new(a, b, c, d, port)).context("connecting")?;
    Ok(TcpStream::from(fd))
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

const LINUX: [TcpOptionElement; 5] = [
    TcpOptionElement::MaximumSegmentSize(1460),
    TcpOptionElement::SelectiveAcknowledgementPermitted,
    TcpOptionElement::Timestamp(0x0102_0304, 0),
    TcpOptionElement::Noop,
    TcpOptionElement::WindowScale(7),
];

fn tcp_frame(
    sport: u16,
    dport: u16,
    syn: bool,
    ack: bool,
    ack_number: u32,
    options: &[TcpOptionElement],
) -> Vec<u8> {
    let mut builder = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
        .ipv4(CLIENT, SERVER, 64)
        .tcp(sport, dport, 0x1234_5678, 64240);
    if syn {
        builder = builder.syn();
    }
    if ack {
        builder = builder.ack(ack_number);
    }
    let builder = builder.options(options).expect("options fit");
    let mut frame = Vec::new();
    builder.write(&mut frame, &[]).expect("frame");
    frame
}

/// `frame` (untagged IPv4) with `options` in its IP header: lengths and checksum fixed up.
fn with_ipv4_options(frame: &[u8], options: &[u8]) -> Vec<u8> {
    const L3: usize = 14;
    let mut out = frame[..L3 + 20].to_vec();
    out.extend_from_slice(options);
    out.extend_from_slice(&frame[L3 + 20..]);
    out[L3] = 0x40 | ((20 + options.len()) / 4) as u8;
    let total = (out.len() - L3) as u16;
    out[L3 + 2..L3 + 4].copy_from_slice(&total.to_be_bytes());
    out[L3 + 10..L3 + 12].fill(0);
    let sum = etherparse::Ipv4Header::from_slice(&out[L3..])
        .expect("an IPv4 header")
        .0
        .calc_header_checksum();
    out[L3 + 10..L3 + 12].copy_from_slice(&sum.to_be_bytes());
    out
}

/// A Linux-like IPv6 SYN to `V6_PORT`, with `extension` (one header, its first byte set here)
/// between the fixed header and TCP.
fn ipv6_syn(extension: &[u8]) -> Vec<u8> {
    const L3: usize = 14;
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
        .ipv6(CLIENT_V6, SERVER_V6, 64)
        .tcp(40000, V6_PORT, 0x1234_5678, 64240)
        .syn()
        .options(&LINUX)
        .expect("options fit")
        .write(&mut frame, &[])
        .expect("frame");
    if let Some((kind, rest)) = extension.split_first() {
        let mut header = vec![frame[L3 + 6]];
        header.extend_from_slice(rest);
        frame[L3 + 6] = *kind;
        frame.splice(L3 + 40..L3 + 40, header);
        let payload = (frame.len() - L3 - 40) as u16;
        frame[L3 + 4..L3 + 6].copy_from_slice(&payload.to_be_bytes());
    }
    frame
}

fn udp_frame() -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
        .ipv4(CLIENT, SERVER, 64)
        .udp(5353, 53)
        .write(&mut frame, b"benchmark")
        .expect("frame");
    frame
}
