//! What users feel: bulk transfers through synguard's cookies against the same transfers
//! through the kernel's own cookies, for every listener kind of the kernel-oracle matrix.
//!
//! A connection built from a cookie takes its window scale from the kernel
//! (`cookie_v4_check()`), while the client believes the SYN-ACK. If the two disagree, every
//! window the server advertises is misread: with a listener's SO_RCVBUF at 64 KiB, a 20 MB
//! upload took 20 to 48 s instead of 0.02 s. Here both ends' TCP_INFO must agree with the
//! kernel-cookie run (scales, MSS, options), and each direction's time must be within 10 % of
//! the kernel-cookie time, in the best round or in the median: five interleaved rounds on each
//! side (five more, up to twenty, while the best rounds differ by more), sender and receiver
//! pinned to a CPU each. Single rounds move by a fifth on this two-core machine, on either
//! side alike; a wrong scale costs seconds, not per cent.
//!
//! Only the handshake differs between the two: the kernel-cookie connection is set up with
//! synguard in mode `off`, then synguard goes back to `cookie` before the data flows (and the
//! synguard round sets `cookie` again at the same point, for the same pause), so both
//! transfers cross the same data path (cookie mode checks every ACK to a protected port, a cost
//! of its own that `cargo xtask bench flood` measures).

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use synguard_lab::{Lab, Netns, Synguard};
use synguard_tests::{cookie_lab, listen_with, succeeded, synguard_cli, tcp_info};

/// 100 MB a transfer, about 150 ms here: long enough that the machine's hiccups are small
/// beside it. The 4 KiB listener, whose 4 KiB window makes 20 MB take 0.7 s already, gets 20 MB.
const BYTES: usize = 100 << 20;
const SLOW_BYTES: usize = 20 << 20;
const ROUNDS: usize = 5;

/// A listener's own settings: (level, option, value), set before listen(), per family.
struct Kind {
    name: &'static str,
    settings: &'static [(i32, i32, i32)],
    /// For IPv6 listeners, when they differ.
    v6: Option<&'static [(i32, i32, i32)]>,
}

const KINDS: &[Kind] = &[
    Kind {
        name: "default",
        settings: &[],
        v6: None,
    },
    Kind {
        name: "SO_RCVBUF 4 KiB",
        settings: &[(libc::SOL_SOCKET, libc::SO_RCVBUF, 4096)],
        v6: None,
    },
    Kind {
        name: "SO_RCVBUF 64 KiB",
        settings: &[(libc::SOL_SOCKET, libc::SO_RCVBUF, 65536)],
        v6: None,
    },
    Kind {
        name: "SO_RCVBUF 1 MiB",
        settings: &[(libc::SOL_SOCKET, libc::SO_RCVBUF, 1 << 20)],
        v6: None,
    },
    Kind {
        name: "SO_RCVBUF 16 MiB",
        settings: &[(libc::SOL_SOCKET, libc::SO_RCVBUF, 16 << 20)],
        v6: None,
    },
    Kind {
        name: "TCP_WINDOW_CLAMP 20000",
        settings: &[(libc::IPPROTO_TCP, libc::TCP_WINDOW_CLAMP, 20000)],
        v6: None,
    },
    Kind {
        name: "TCP_MAXSEG 1000",
        settings: &[(libc::IPPROTO_TCP, libc::TCP_MAXSEG, 1000)],
        v6: None,
    },
    Kind {
        name: "IP_TOS 0x28, IPV6_TCLASS 0x28",
        settings: &[(libc::IPPROTO_IP, libc::IP_TOS, 0x28)],
        v6: Some(&[(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, 0x28)]),
    },
    Kind {
        name: "IP_TTL 33, IPV6_UNICAST_HOPS 33",
        settings: &[(libc::IPPROTO_IP, libc::IP_TTL, 33)],
        v6: Some(&[(libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, 33)]),
    },
];

fn listener(
    ns: &Netns,
    ipv6: bool,
    port: u16,
    settings: &'static [(i32, i32, i32)],
) -> TcpListener {
    ns.enter(move || listen_with(ipv6, port, settings))
        .unwrap()
        .expect("a listener with those settings")
}

/// What TCP_INFO says on one end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct End {
    snd_wscale: u8,
    rcv_wscale: u8,
    snd_mss: u32,
    options: u8,
}

fn end(stream: &TcpStream) -> End {
    let info = tcp_info(stream);
    End {
        snd_wscale: info.tcpi_snd_rcv_wscale & 0x0f,
        rcv_wscale: info.tcpi_snd_rcv_wscale >> 4,
        snd_mss: info.tcpi_snd_mss,
        options: info.tcpi_options,
    }
}

/// One connection from the client namespace, `bytes` one way (upload: client to server);
/// returns the time and both ends' TCP_INFO.
/// `connected` runs once the connection is up, before the clock starts.
fn transfer(
    client: &Netns,
    listener: &TcpListener,
    to: SocketAddr,
    upload: bool,
    bytes: usize,
    connected: impl FnOnce(),
) -> (Duration, End, End) {
    let listener = listener.try_clone().unwrap();
    // Sender and receiver on a CPU each: left to the scheduler, a single transfer's time moves
    // by a quarter on this two-core machine.
    pin_to_cpu(0);
    let server = thread::spawn(move || {
        pin_to_cpu(1);
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        if upload {
            let mut got = 0;
            while got < bytes {
                let n = stream.read(&mut buf).unwrap();
                assert!(n > 0, "upload cut short at {got}");
                got += n;
            }
            stream.write_all(b"k").unwrap();
        } else {
            let chunk = vec![0x5au8; 1 << 16];
            let mut sent = 0;
            while sent < bytes {
                stream.write_all(&chunk).unwrap();
                sent += chunk.len();
            }
            let _ = stream.read(&mut buf);
        }
        end(&stream)
    });
    let mut stream = client
        .enter(move || TcpStream::connect_timeout(&to, Duration::from_secs(2)))
        .unwrap()
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    connected();
    let started = Instant::now();
    let mut buf = vec![0u8; 1 << 16];
    if upload {
        let chunk = vec![0xa5u8; 1 << 16];
        let mut sent = 0;
        while sent < bytes {
            stream.write_all(&chunk).unwrap();
            sent += chunk.len();
        }
        let mut ack = [0u8; 1];
        stream.read_exact(&mut ack).unwrap();
    } else {
        let mut got = 0;
        while got < bytes {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "download cut short at {got}");
            got += n;
        }
    }
    let took = started.elapsed();
    let client_end = end(&stream);
    drop(stream);
    let server_end = server.join().unwrap();
    (took, client_end, server_end)
}

fn pin_to_cpu(cpu: usize) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu % cpus).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
}

fn set_mode(iface: &str, mode: &str) {
    succeeded(&synguard_cli(&[
        "set",
        &format!("mode={mode}"),
        "--iface",
        iface,
    ]));
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One side of the comparison: the median time, and what (client, server) TCP_INFO said.
struct Runs {
    time: Duration,
    ends: (End, End),
}

/// Synguard's best round over the kernel's best: what each can do, with the machine's
/// hiccups (a round here and there a fifth slower, on either side) left out.
fn best_ratio(kernel: &[Duration], ours: &[Duration]) -> f64 {
    let best = |v: &[Duration]| v.iter().min().unwrap().as_secs_f64();
    best(ours) / best(kernel)
}

/// The kernel-cookie and synguard-cookie runs of one listener and direction, and the ratio of
/// their best rounds.
fn compare(
    lab: &Lab,
    listener: &TcpListener,
    to: SocketAddr,
    upload: bool,
    bytes: usize,
) -> (Runs, Runs, f64) {
    let iface = &lab.server.iface;
    let (mut kernel, mut ours) = (Vec::new(), Vec::new());
    let (mut kernel_ends, mut our_ends) = (None, None);
    let sent_before = lab.server.netstat("TcpExtSyncookiesSent").unwrap();
    // Five rounds a side, and five more (up to twenty) while the best rounds differ by more
    // than 10 %: the best of more rounds comes closer to what each side can do, so a hiccup
    // of the machine fades, while a wrong promise (a thousandfold here) stays.
    let mut ratio = f64::INFINITY;
    while ratio > 1.10 && kernel.len() < 4 * ROUNDS {
        for _ in 0..ROUNDS {
            set_mode(iface, "off");
            let (t, c, s) = transfer(&lab.client, listener, to, upload, bytes, || {
                set_mode(iface, "cookie")
            });
            kernel.push(t);
            kernel_ends = Some((c, s));
            // The same pause between connect and data as the kernel's round has (a mode
            // set), so that the two differ only in who made the SYN-ACK.
            let (t, c, s) = transfer(&lab.client, listener, to, upload, bytes, || {
                set_mode(iface, "cookie")
            });
            ours.push(t);
            our_ends = Some((c, s));
        }
        ratio = best_ratio(&kernel, &ours);
    }
    // The kernel answered exactly its own rounds' SYNs with cookies: synguard answered the rest.
    let sent = lab.server.netstat("TcpExtSyncookiesSent").unwrap() - sent_before;
    assert_eq!(
        sent,
        kernel.len() as u64,
        "kernel cookie SYN-ACKs, one per kernel round"
    );
    (
        Runs {
            time: median(kernel),
            ends: kernel_ends.unwrap(),
        },
        Runs {
            time: median(ours),
            ends: our_ends.unwrap(),
        },
        ratio,
    )
}

#[test]
fn transfers_through_synguards_cookies_match_the_kernels_own() {
    let lab = cookie_lab();
    let _synguard = Synguard::start(&lab.server, &["--mode", "cookie"]).unwrap();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (i, kind) in KINDS.iter().enumerate() {
        for ipv6 in [false, true] {
            let port = 8200 + i as u16;
            let settings = match (ipv6, kind.v6) {
                (true, Some(v6)) => v6,
                _ => kind.settings,
            };
            let listener = listener(&lab.server, ipv6, port, settings);
            let ip: IpAddr = if ipv6 {
                lab.server.ipv6.into()
            } else {
                lab.server.ipv4.into()
            };
            let to = SocketAddr::new(ip, port);
            for upload in [true, false] {
                let what = format!(
                    "{} {} {}",
                    if ipv6 { "IPv6" } else { "IPv4" },
                    kind.name,
                    if upload { "upload" } else { "download" }
                );
                let bytes = if kind.name == "SO_RCVBUF 4 KiB" {
                    SLOW_BYTES
                } else {
                    BYTES
                };
                let (kernel_runs, our_runs, ratio) = compare(&lab, &listener, to, upload, bytes);
                let (kernel, ours) = (kernel_runs.time, our_runs.time);
                let (kernel_ends, our_ends) = (kernel_runs.ends, our_runs.ends);
                report.push(format!(
                    "{what}: kernel cookies {:.1} ms, synguard {:.1} ms (best rounds {ratio:.2}), \
                     scales {}/{}",
                    kernel.as_secs_f64() * 1e3,
                    ours.as_secs_f64() * 1e3,
                    our_ends.0.snd_wscale,
                    our_ends.1.rcv_wscale,
                ));
                if kernel_ends != our_ends {
                    failures.push(format!(
                        "{what}: TCP_INFO (client, server) kernel {kernel_ends:?}, synguard {our_ends:?}"
                    ));
                }
                // Slower in its best round and in its median too: a promise the kernel does
                // not keep slows every round (tenfold and more), while this machine's noise
                // moves one statistic at a time. Measured on identical code, the best-round
                // ratio of one case went from 1.12 (median ratio 1.05) to 0.74 between two
                // runs, so the best round alone failed on noise.
                let median_ratio = ours.as_secs_f64() / kernel.as_secs_f64();
                if ratio > 1.10 && median_ratio > 1.10 {
                    failures.push(format!(
                        "{what}: best round {ratio:.2} times the kernel's (medians {ours:?}, \
                         {kernel:?})"
                    ));
                }
            }
        }
    }
    println!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// After `net.ipv4.tcp_rmem` changes under a running synguard, new cookie connections carry
/// the kernel's new window scale.
#[test]
fn a_tcp_rmem_change_reaches_the_next_cookie_connections() {
    let lab = cookie_lab();
    let _synguard = Synguard::start(&lab.server, &["--mode", "cookie"]).unwrap();
    let listener = listener(&lab.server, false, 8300, &[]);
    let to = SocketAddr::new(lab.server.ipv4.into(), 8300);
    let connect = || {
        let listener = listener.try_clone().unwrap();
        let server = thread::spawn(move || end(&listener.accept().unwrap().0));
        let stream = lab
            .client
            .enter(move || TcpStream::connect_timeout(&to, Duration::from_secs(2)))
            .unwrap()
            .unwrap();
        let client = end(&stream);
        (client, server.join().unwrap())
    };
    let before = connect();
    assert_eq!(
        before.0.snd_wscale, before.1.rcv_wscale,
        "before: {before:?}"
    );
    // A maximum whose scale differs from the namespace's current one (both are at least 6).
    let current = lab.server.sysctl("net.ipv4.tcp_rmem").unwrap();
    let max: u64 = current.split_whitespace().nth(2).unwrap().parse().unwrap();
    let new_max = if max > 1 << 21 { 1 << 20 } else { 1 << 24 };
    lab.server
        .set_sysctl("net.ipv4.tcp_rmem", &format!("4096 131072 {new_max}"))
        .unwrap();
    thread::sleep(Duration::from_millis(400));
    let after = connect();
    set_mode(&lab.server.iface, "off");
    let kernel = connect();
    assert_ne!(
        after.1.rcv_wscale, before.1.rcv_wscale,
        "the kernel's scale changed"
    );
    assert_eq!(
        after.0.snd_wscale, after.1.rcv_wscale,
        "the client uses the scale the kernel chose: {after:?}"
    );
    assert_eq!(after, kernel, "as through the kernel's own cookies");
}
