//! The connection matrix: the rare cases of a TCP connection's life, end to end in the lab, on
//! IPv4 and IPv6, under synguard in `cookie` mode and in `auto` mode while it answers a flood.
//! Every connection must complete and exchange data; none may hang or be reset, except where
//! the kernel alone would need the same retry (said at each case).
//!
//! The cases: TIME_WAIT reuse with and without timestamps; a client that lost its state;
//! connections older than the attach, across a mode switch and a takeover; a listener restarted
//! under load; a SO_REUSEPORT group restarted one listener at a time; 5,000 connections from
//! one address; a TCP Fast Open client; IPv4-mapped clients on a dual-stack listener.

use std::{
    io::{self, BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use synguard_common::Reason;
use synguard_lab::{Lab, MetricsText, SynShape, Synguard, syn_flood};
use synguard_tests::{succeeded, synguard_cli};

/// The flood's port in `auto`: a listener of its own, so its SYNs are answered from XDP.
const FLOOD_PORT: u16 = 7000;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Protection {
    Cookie,
    /// `auto`, switched to cookies by a spoofed flood that runs through every case.
    AutoUnderFlood,
}

/// An echo server on a listener of the server namespace: each line comes back; after a line
/// `bye` the server closes first, as an HTTP/1.0 server does.
struct Echo {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Echo {
    fn start(listener: TcpListener) -> Echo {
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (s, a) = (stop.clone(), accepted.clone());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        a.fetch_add(1, Ordering::Relaxed);
                        thread::spawn(move || serve(stream));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(1)),
                }
            }
            // The listener closes here, when the thread lets go of it.
        });
        Echo {
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if writer.write_all(line.as_bytes()).is_err() {
            return;
        }
        if line.trim() == "bye" {
            return;
        }
    }
}

/// A listening socket on `port` in the server namespace: IPv4 on 0.0.0.0, IPv6 on [::]
/// (IPv6 only unless `dual_stack`), with SO_REUSEPORT when asked.
fn listen(lab: &Lab, ipv6: bool, dual_stack: bool, port: u16, reuse_port: bool) -> TcpListener {
    lab.server
        .enter(move || -> io::Result<TcpListener> {
            let (domain, addr): (Domain, SocketAddr) = if ipv6 {
                (Domain::IPV6, (std::net::Ipv6Addr::UNSPECIFIED, port).into())
            } else {
                (Domain::IPV4, (std::net::Ipv4Addr::UNSPECIFIED, port).into())
            };
            let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(reuse_port)?;
            if ipv6 {
                socket.set_only_v6(!dual_stack)?;
            }
            socket.bind(&SockAddr::from(addr))?;
            socket.listen(1024)?;
            Ok(socket.into())
        })
        .unwrap()
        .unwrap_or_else(|e| panic!("listening on port {port}: {e}"))
}

/// Connects from the client namespace (from `from_port` if given) and returns the stream and
/// how long the handshake took.
fn dial(lab: &Lab, to: SocketAddr, from_port: Option<u16>) -> io::Result<(TcpStream, Duration)> {
    lab.client
        .enter(move || -> io::Result<(TcpStream, Duration)> {
            let domain = if to.is_ipv6() {
                Domain::IPV6
            } else {
                Domain::IPV4
            };
            let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
            if let Some(port) = from_port {
                socket.set_reuse_address(true)?;
                let local: SocketAddr = match to {
                    SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, port).into(),
                    SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, port).into(),
                };
                socket.bind(&SockAddr::from(local))?;
            }
            let started = Instant::now();
            socket.connect_timeout(&SockAddr::from(to), Duration::from_secs(10))?;
            let stream: TcpStream = socket.into();
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            Ok((stream, started.elapsed()))
        })
        .unwrap()
}

/// One line there and back on an open connection.
fn round_trip(stream: &mut TcpStream, line: &str) -> io::Result<()> {
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut back = String::new();
    BufReader::new(stream.try_clone()?).read_line(&mut back)?;
    if back.trim() != line {
        return Err(io::Error::other(format!("sent {line:?}, got {back:?}")));
    }
    Ok(())
}

/// A whole request: connect, one line, the server closes first. Returns the handshake time.
fn request(lab: &Lab, to: SocketAddr, from_port: Option<u16>) -> io::Result<Duration> {
    let (mut stream, took) = dial(lab, to, from_port)?;
    round_trip(&mut stream, "bye")?;
    // The server's FIN, then ours: the server holds the TIME_WAIT.
    let mut rest = String::new();
    BufReader::new(stream.try_clone()?).read_line(&mut rest)?;
    Ok(took)
}

/// The lab with synguard protecting it as `protection` says, and the flood's stop flag.
struct Protected<'a> {
    lab: &'a Lab,
    sg: Option<Synguard>,
    protection: Protection,
}

impl Protected<'_> {
    fn sg(&self) -> &Synguard {
        self.sg.as_ref().unwrap()
    }

    fn metrics(&self) -> MetricsText {
        self.sg().metrics().unwrap()
    }

    fn decisions(&self, reason: Reason) -> f64 {
        self.metrics()
            .sum("synguard_decisions_total", &[("reason", reason.name())])
    }

    fn under_attack(&self) -> bool {
        self.metrics().sum("synguard_under_attack", &[]) >= 1.0
    }

    fn args(protection: Protection) -> Vec<&'static str> {
        match protection {
            Protection::Cookie => vec!["--mode", "cookie"],
            Protection::AutoUnderFlood => {
                vec![
                    "--mode",
                    "auto",
                    "--auto-threshold",
                    "2000",
                    "--auto-hold-ms",
                    "3000",
                ]
            }
        }
    }

    fn start(&mut self) {
        self.sg = Some(Synguard::start(&self.lab.server, &Self::args(self.protection)).unwrap());
    }

    /// Hands over (SIGQUIT) and starts again, taking the program over.
    fn restart_by_takeover(&mut self) {
        let out = self.sg.take().unwrap().stop(Signal::SIGQUIT).unwrap();
        assert!(out.status.success(), "{out:?}");
        self.start();
        assert!(
            self.sg().log().contains("took over the program"),
            "{}",
            self.sg().log()
        );
    }
}

fn server_addr(lab: &Lab, ipv6: bool, port: u16) -> SocketAddr {
    match ipv6 {
        true => SocketAddr::new(lab.server.ipv6.into(), port),
        false => SocketAddr::new(lab.server.ipv4.into(), port),
    }
}

/// TIME_WAIT reuse: the server closed first; the client comes back from the same port within
/// 60 s, with timestamps (a newer TSval) and without (a higher ISN: Linux's grows with time).
/// The kernel accepts such a SYN on the TIME_WAIT socket (`tcp_timewait_state_process()`),
/// which synguard must pass to it: no retry.
fn time_wait_reuse(p: &Protected, ipv6: bool) {
    let lab = p.lab;
    let port = 8101;
    let _echo = Echo::start(listen(lab, ipv6, false, port, false));
    let to = server_addr(lab, ipv6, port);
    let existing = p.decisions(Reason::SynExistingSocket);
    for (timestamps, from) in [(true, 45101), (false, 45102)] {
        lab.client
            .set_sysctl(
                "net.ipv4.tcp_timestamps",
                if timestamps { "1" } else { "0" },
            )
            .unwrap();
        request(lab, to, Some(from)).expect("the first connection");
        thread::sleep(Duration::from_millis(100));
        let waiting = lab
            .server
            .exec(
                "ss",
                &["-Htn", "state", "time-wait", &format!("dport = :{from}")],
            )
            .unwrap();
        assert!(!waiting.trim().is_empty(), "the server holds the TIME_WAIT");
        let took = request(lab, to, Some(from))
            .unwrap_or_else(|e| panic!("reuse of a TIME_WAIT (timestamps {timestamps}): {e}"));
        assert!(
            took < Duration::from_millis(900),
            "TIME_WAIT reuse took {took:?}: a retry the kernel alone would not need"
        );
    }
    lab.client
        .set_sysctl("net.ipv4.tcp_timestamps", "1")
        .unwrap();
    assert!(
        p.decisions(Reason::SynExistingSocket) >= existing + 2.0,
        "the SYNs on TIME_WAIT 4-tuples went to the kernel"
    );
}

/// A client that lost its state: it vanished without its RST reaching the server (a reboot),
/// then connects again from the same port. The server's kernel answers that SYN with a
/// challenge ACK (`tcp_send_challenge_ack()`), the client's kernel answers with an RST that
/// ends the old connection and retransmits its SYN almost at once (`tcp_rcv_synsent_state_process()`
/// rearms the timer to TCP_TIMEOUT_MIN), which connects: the one retry the kernel alone needs.
fn lost_state(p: &Protected, ipv6: bool) {
    let lab = p.lab;
    let port = 8102;
    let from = 45103;
    let _echo = Echo::start(listen(lab, ipv6, false, port, false));
    let to = server_addr(lab, ipv6, port);
    let (mut stream, _) = dial(lab, to, Some(from)).unwrap();
    round_trip(&mut stream, "hello").unwrap();
    // The client forgets the connection: an RST it sends on close never leaves.
    lab.client
        .exec(
            "nft",
            &[
                "add table inet sglost; add chain inet sglost out { type filter hook output \
               priority 0; } ; add rule inet sglost out tcp flags rst drop",
            ],
        )
        .expect("nft (Debian package nftables)");
    Socket::from(stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    thread::sleep(Duration::from_millis(50));
    lab.client
        .exec("nft", &["delete table inet sglost"])
        .unwrap();
    let challenges = lab.server.netstat("TcpExtTCPChallengeACK").unwrap();
    let took = request(lab, to, Some(from)).expect("the reconnect after the lost state");
    assert!(
        took < Duration::from_millis(3500),
        "the reconnect took {took:?}: more than the one retry"
    );
    assert!(
        lab.server.netstat("TcpExtTCPChallengeACK").unwrap() > challenges,
        "the server's kernel sent its challenge ACK"
    );
}

/// A listener restarted under load: clients that connect right after the new `listen()` get
/// in within 1 s.
fn listener_restart(p: &Protected, ipv6: bool) {
    let lab = p.lab;
    let port = 8104;
    let to = server_addr(lab, ipv6, port);
    let echo = Echo::start(listen(lab, ipv6, false, port, false));
    request(lab, to, None).expect("before the restart");
    drop(echo);
    thread::sleep(Duration::from_millis(200));
    let listening = Instant::now();
    let _echo = Echo::start(listen(lab, ipv6, false, port, false));
    for i in 0..10 {
        let took = request(lab, to, None)
            .unwrap_or_else(|e| panic!("client {i} after the new listen(): {e}"));
        assert!(took < Duration::from_secs(1), "client {i} took {took:?}");
        thread::sleep(Duration::from_millis(50));
    }
    assert!(listening.elapsed() < Duration::from_secs(3));
}

/// A SO_REUSEPORT group of three, restarted one listener at a time while a client connects
/// continuously. The kernel migrates what a closing listener holds to the others
/// (`tcp_migrate_req=1`; without it the kernel alone resets them).
fn reuseport_restart(p: &Protected, ipv6: bool) {
    let lab = p.lab;
    let port = 8105;
    let to = server_addr(lab, ipv6, port);
    lab.server
        .set_sysctl("net.ipv4.tcp_migrate_req", "1")
        .unwrap();
    let mut group: Vec<Echo> = (0..3)
        .map(|_| Echo::start(listen(lab, ipv6, false, port, true)))
        .collect();
    let stop = AtomicBool::new(false);
    let (done, failures) = thread::scope(|scope| {
        let client = scope.spawn(|| {
            let (mut done, mut failures) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match request(lab, to, None) {
                    Ok(_) => done += 1,
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (done, failures)
        });
        for _ in 0..3 {
            thread::sleep(Duration::from_millis(300));
            drop(group.remove(0));
            thread::sleep(Duration::from_millis(100));
            group.push(Echo::start(listen(lab, ipv6, false, port, true)));
        }
        thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        client.join().unwrap()
    });
    assert!(
        failures.is_empty(),
        "{} of {} failed: {failures:?}",
        failures.len(),
        done
    );
    assert!(done >= 20, "only {done} requests in the restarts");
}

/// 5,000 connections from one address in at most 10 s, the client cycling source ports, the
/// server closing each first (5,000 TIME_WAIT sockets on one client address).
fn many_from_one_address(p: &Protected, ipv6: bool) {
    let lab = p.lab;
    let port = 8106;
    let to = server_addr(lab, ipv6, port);
    let echo = Echo::start(listen(lab, ipv6, false, port, false));
    let started = Instant::now();
    let failures = AtomicU64::new(0);
    thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..1250 {
                    if request(lab, to, None).is_err() {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let took = started.elapsed();
    assert_eq!(failures.into_inner(), 0, "connections failed");
    assert_eq!(echo.accepted(), 5000);
    assert!(
        took <= Duration::from_secs(10),
        "5,000 connections took {took:?}"
    );
}

/// A TCP Fast Open client, data in its SYN. A cookie SYN-ACK acknowledges only the SYN, as
/// the kernel's own does; the client sends the data again after the handshake.
fn fast_open(p: &Protected, ipv6: bool) {
    let lab = p.lab;
    let port = 8107;
    let listener = listen(lab, ipv6, false, port, false);
    set_int(&listener, libc::IPPROTO_TCP, libc::TCP_FASTOPEN, 16);
    let _echo = Echo::start(listener);
    // Data in the SYN without a Fast Open cookie (TFO_CLIENT_NO_COOKIE), so it is there.
    lab.client.set_sysctl("net.ipv4.tcp_fastopen", "5").unwrap();
    let to = server_addr(lab, ipv6, port);
    let answer = lab
        .client
        .enter(move || -> io::Result<String> {
            let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
            let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
            socket.set_read_timeout(Some(Duration::from_secs(10)))?;
            // sendto(MSG_FASTOPEN) connects and puts the data in the SYN.
            socket.send_to_with_flags(b"bye\n", &SockAddr::from(to), libc::MSG_FASTOPEN)?;
            let stream: TcpStream = socket.into();
            let mut back = String::new();
            BufReader::new(stream).read_line(&mut back)?;
            Ok(back)
        })
        .unwrap();
    lab.client.set_sysctl("net.ipv4.tcp_fastopen", "1").unwrap();
    assert_eq!(answer.expect("the Fast Open client's answer").trim(), "bye");
}

/// IPv4 clients of a dual-stack IPv6 listener ([::], IPV6_V6ONLY off): the kernel finds the
/// listener for IPv4 SYNs, and so must synguard's lookup.
fn ipv4_mapped(p: &Protected) {
    let lab = p.lab;
    let port = 8108;
    let _echo = Echo::start(listen(lab, true, true, port, false));
    for _ in 0..5 {
        request(lab, server_addr(lab, false, port), None).expect("an IPv4 client of [::]");
    }
}

fn set_int(socket: &impl std::os::fd::AsRawFd, level: i32, name: i32, value: i32) {
    // SAFETY: setsockopt with an int of the size passed, on an open descriptor.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            &value as *const i32 as *const libc::c_void,
            size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", io::Error::last_os_error());
}

/// Connections older than the attach, idle, without keepalive: they exchange data after the
/// attach, after a mode switch and after a takeover; once closed by the server, the client
/// connects again from their ports.
struct Elders {
    _echoes: Vec<Echo>,
    connections: Vec<(TcpStream, SocketAddr, u16)>,
}

impl Elders {
    fn open(lab: &Lab) -> Elders {
        let port = 8103;
        let echoes = vec![
            Echo::start(listen(lab, false, false, port, false)),
            Echo::start(listen(lab, true, false, port, false)),
        ];
        let connections = [false, true]
            .into_iter()
            .map(|ipv6| {
                let to = server_addr(lab, ipv6, port);
                let from = 45110 + u16::from(ipv6);
                let (mut stream, _) = dial(lab, to, Some(from)).unwrap();
                round_trip(&mut stream, "before the attach").unwrap();
                (stream, to, from)
            })
            .collect();
        Elders {
            _echoes: echoes,
            connections,
        }
    }

    fn round_trip(&mut self, when: &str) {
        for (stream, to, _) in &mut self.connections {
            round_trip(stream, when).unwrap_or_else(|e| panic!("{to}, {when}: {e}"));
        }
    }

    fn close_and_reconnect(self, lab: &Lab) {
        for (mut stream, to, from) in self.connections {
            round_trip(&mut stream, "bye").unwrap();
            let mut rest = String::new();
            BufReader::new(stream).read_line(&mut rest).unwrap();
            thread::sleep(Duration::from_millis(50));
            request(lab, to, Some(from))
                .unwrap_or_else(|e| panic!("reconnecting to {to} from port {from}: {e}"));
        }
    }
}

fn matrix(protection: Protection) {
    let lab = Lab::new().unwrap();
    let mut elders = Elders::open(&lab);
    thread::sleep(Duration::from_millis(200));
    let _flood_listener = listen(&lab, false, false, FLOOD_PORT, false);
    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        let mut p = Protected {
            lab: &lab,
            sg: None,
            protection,
        };
        p.start();
        let flood = (protection == Protection::AutoUnderFlood).then(|| {
            scope.spawn(|| {
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) {
                    let report = syn_flood(
                        &lab,
                        FLOOD_PORT,
                        20_000,
                        Some(20_000),
                        SynShape::Bare,
                        Duration::from_secs(2),
                    )
                    .unwrap();
                    sent += report.sent;
                }
                sent
            })
        });
        if flood.is_some() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !p.under_attack() {
                assert!(Instant::now() < deadline, "auto never switched to cookies");
                thread::sleep(Duration::from_millis(100));
            }
        }
        let cookie_acks = p.decisions(Reason::AckCookieValid);

        elders.round_trip("after the attach");
        let iface = lab.server.iface.clone();
        let other = match protection {
            Protection::Cookie => "mode=auto",
            Protection::AutoUnderFlood => "mode=cookie",
        };
        succeeded(&synguard_cli(&["set", other, "--iface", &iface]));
        elders.round_trip("after a mode switch");
        let back = match protection {
            Protection::Cookie => "mode=cookie",
            Protection::AutoUnderFlood => "mode=auto",
        };
        succeeded(&synguard_cli(&["set", back, "--iface", &iface]));
        p.restart_by_takeover();
        elders.round_trip("after the takeover");
        if flood.is_some() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !p.under_attack() {
                assert!(
                    Instant::now() < deadline,
                    "auto not under attack after the takeover"
                );
                thread::sleep(Duration::from_millis(100));
            }
        }

        for ipv6 in [false, true] {
            let family = if ipv6 { "IPv6" } else { "IPv4" };
            let case = |name: &str, run: &dyn Fn()| {
                let started = Instant::now();
                run();
                println!(
                    "{protection:?} {family} {name}: ok in {:?}",
                    started.elapsed()
                );
            };
            case("TIME_WAIT reuse", &|| time_wait_reuse(&p, ipv6));
            case("lost state", &|| lost_state(&p, ipv6));
            case("listener restart", &|| listener_restart(&p, ipv6));
            case("SO_REUSEPORT restart", &|| reuseport_restart(&p, ipv6));
            case("5,000 from one address", &|| {
                many_from_one_address(&p, ipv6)
            });
            case("TCP Fast Open", &|| fast_open(&p, ipv6));
        }
        ipv4_mapped(&p);
        elders.close_and_reconnect(&lab);

        // The cases' handshakes went through cookies: thousands of valid cookie ACKs.
        let cookie_acks = p.decisions(Reason::AckCookieValid) - cookie_acks;
        assert!(cookie_acks >= 10_000.0, "only {cookie_acks} cookie ACKs");
        stop.store(true, Ordering::Relaxed);
        if let Some(flood) = flood {
            let sent = flood.join().unwrap();
            assert!(sent > 0);
        }
        assert!(
            p.sg.take()
                .unwrap()
                .stop(Signal::SIGTERM)
                .unwrap()
                .status
                .success()
        );
    });
}

#[test]
fn every_case_completes_in_cookie_mode() {
    matrix(Protection::Cookie);
}

#[test]
fn every_case_completes_in_auto_mode_during_a_flood() {
    matrix(Protection::AutoUnderFlood);
}
