//! The fast path (docs/design.md): a SYN whose source cannot own a socket is answered without
//! the socket lookup. Its guard rail, in the kernel with BPF_PROG_TEST_RUN: for every socket in
//! the namespace's table, in every state and however it was made (a cookie handshake, an
//! IPv6 one, TIME_WAIT after the server closed, a handshake the kernel is doing itself, a
//! connection over loopback to the host's own address, an outbound connection from a port that
//! then got a listener), a SYN crafted for its 4-tuple is never answered with a cookie, while
//! SYNs from fresh sources to the same destination are answered without a lookup.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    thread,
    time::Duration,
};

use socket2::{Domain, Socket, Type};
use synguard_common::{
    Config, Mode, Reason,
    config::flags,
    owners::{self, OwnerBits},
};
use synguard_tests::{InKernel, XDP_TX, cookie_lab};

const PORT: u16 = 80;
/// The port the server connects out from, and then listens on.
const OUT_PORT: u16 = 8081;
/// The client's listener for that outbound connection.
const CLIENT_LISTENER: u16 = 9000;
const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 1);
/// In the spoofed range; its SYN-ACK goes nowhere, so its request socket stays.
const HALF_OPEN_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 18, 130, 9);

fn config() -> Config {
    Config {
        mode: Mode::Cookie as u32,
        flags: flags::ALL_PORTS | flags::TIMESTAMPS,
        ..Config::DEFAULT
    }
}

/// A SYN from `src` to `dst`, with the lab's MACs.
fn syn(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let eth = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1]);
    let mut frame = Vec::new();
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth
            .ipv4(s.octets(), d.octets(), 64)
            .tcp(src.port(), dst.port(), 7, 64240)
            .syn()
            .write(&mut frame, &[]),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth
            .ipv6(s.octets(), d.octets(), 64)
            .tcp(src.port(), dst.port(), 7, 64240)
            .syn()
            .write(&mut frame, &[]),
        _ => panic!("mixed families"),
    }
    .unwrap();
    frame
}

/// Sockets of this thread's namespace that have a peer: (state, local, remote), from
/// /proc/net/tcp and tcp6, IPv4-mapped addresses as IPv4.
fn table() -> Vec<(String, SocketAddr, SocketAddr)> {
    let parse = |field: &str| -> SocketAddr {
        let (addr, port) = field.split_once(':').unwrap();
        let port = u16::from_str_radix(port, 16).unwrap();
        let words: Vec<u32> = (0..addr.len() / 8)
            .map(|i| u32::from_str_radix(&addr[8 * i..8 * i + 8], 16).unwrap())
            .collect();
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let ip = match bytes.len() {
            4 => IpAddr::from(<[u8; 4]>::try_from(bytes).unwrap()),
            _ => {
                let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap());
                v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
            }
        };
        SocketAddr::new(ip, port)
    };
    let mut sockets = Vec::new();
    for path in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
        let text = std::fs::read_to_string(path).unwrap();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f[3] != "0A" {
                sockets.push((f[3].to_string(), parse(f[1]), parse(f[2])));
            }
        }
    }
    sockets
}

/// A fresh source in `dst`'s family that never owned a socket here.
fn fresh_source(dst: &SocketAddr, n: u16) -> SocketAddr {
    let ip = match dst.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(198, 18, 200, (n % 250) as u8 + 1)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0xc8, n)),
    };
    SocketAddr::new(ip, 40_000 + n)
}

#[test]
fn a_syn_for_any_socket_in_the_table_is_never_answered_with_a_cookie() {
    let lab = cookie_lab();
    let client = lab.client.clone();
    let server = lab.server.clone();
    lab.server
        .enter(|| {
            let listener = TcpListener::bind(("::", PORT)).unwrap();
            let mut program = InKernel::load(&config());

            // 1. A cookie handshake (tcp_syncookies=2: the kernel answers with cookies), over
            //    IPv4 and IPv6; both stay open.
            let (v4, v6) = client
                .enter(|| {
                    let v4 = TcpStream::connect((SERVER_V4, PORT)).unwrap();
                    let v6 = TcpStream::connect((SERVER_V6, PORT)).unwrap();
                    (v4, v6)
                })
                .unwrap();
            let (v4_server, _) = listener.accept().unwrap();
            let (v6_server, _) = listener.accept().unwrap();

            // 2. TIME_WAIT: the server closes first.
            let closing = client
                .enter(|| TcpStream::connect((SERVER_V4, PORT)).unwrap())
                .unwrap();
            let (closed, _) = listener.accept().unwrap();
            drop(closed);
            let mut closing = closing;
            let mut rest = Vec::new();
            let _ = closing.read_to_end(&mut rest);
            drop(closing);

            // 3. A handshake the kernel does itself: with tcp_syncookies=1 it keeps a request
            //    socket for a SYN whose SYN-ACK nobody answers.
            server.set_sysctl("net.ipv4.tcp_syncookies", "1").unwrap();
            // hping3 exits 1 when nothing answers, which is the point here.
            let sent = client
                .command("hping3")
                .args(["-q", "-S", "-c", "1", "-p", "80", "-s", "45000", "-k", "-a"])
                .args([HALF_OPEN_SOURCE.to_string(), SERVER_V4.to_string()])
                .output()
                .unwrap();
            assert!(
                String::from_utf8_lossy(&sent.stderr).contains("1 packets transmitted"),
                "hping3: {sent:?}"
            );
            thread::sleep(Duration::from_millis(200));
            server.set_sysctl("net.ipv4.tcp_syncookies", "2").unwrap();

            // 4. Over loopback, to the host's own address.
            let looped = TcpStream::connect((SERVER_V4, PORT)).unwrap();
            let (looped_server, _) = listener.accept().unwrap();

            // 5. Outbound from a port that then gets a listener (SO_REUSEADDR on both).
            let client_listener = client
                .enter(|| TcpListener::bind((CLIENT_V4, CLIENT_LISTENER)).unwrap())
                .unwrap();
            let out = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            out.set_reuse_address(true).unwrap();
            out.bind(&SocketAddr::from((SERVER_V4, OUT_PORT)).into())
                .unwrap();
            out.connect(&SocketAddr::from((CLIENT_V4, CLIENT_LISTENER)).into())
                .unwrap();
            let mut out: TcpStream = out.into();
            out.write_all(b"x").unwrap();
            let out_listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            out_listener.set_reuse_address(true).unwrap();
            out_listener
                .bind(&SocketAddr::from((SERVER_V4, OUT_PORT)).into())
                .unwrap();
            out_listener.listen(16).unwrap();

            let sockets = table();
            let states: Vec<&str> = sockets.iter().map(|(s, _, _)| s.as_str()).collect();
            for state in ["01", "03", "06"] {
                assert!(
                    states.contains(&state),
                    "no socket in state {state} to check: {sockets:?}"
                );
            }

            // Twice: with the bits the kernel-side paths set, and after a rebuild from the
            // table alone. A request socket made from a SYN that never went through the XDP
            // program (here hping3's, as one that came by another interface) is noted at once
            // only where the kernel lets the request program attach (fentry); elsewhere the
            // rebuild learns it, so it is checked in the second round only.
            let requests_traced = program.owners.requests_traced();
            println!("request sockets traced as they are made: {requests_traced}");
            for round in 0..2 {
                if round == 1 {
                    program.rebuild_owners();
                }
                let mut fast = 0;
                for (n, (state, local, remote)) in sockets.iter().enumerate() {
                    if round == 0 && state == "03" && !requests_traced {
                        continue;
                    }
                    // Prime this destination: a stamped answer, then fresh sources answered
                    // without a lookup (if anything listens there).
                    let mut primed = false;
                    for attempt in 0..20u16 {
                        let src = fresh_source(local, (n as u16) * 20 + attempt);
                        let out = program.run(&syn(src, *local));
                        if out.reasons() == [Reason::CookieNoLookup] {
                            primed = true;
                            break;
                        }
                    }
                    let out = program.run(&syn(*remote, *local));
                    assert_ne!(
                        out.code,
                        XDP_TX,
                        "round {round}: a SYN for socket {local} <- {remote} (state {state}) \
                         was answered with a cookie: {:?}",
                        out.reasons()
                    );
                    if primed {
                        fast += 1;
                        assert_eq!(
                            out.reasons(),
                            [Reason::SynExistingSocket],
                            "round {round}: {local} <- {remote} (state {state})"
                        );
                    }
                }
                // Every socket to a listening port was checked with the fast path on.
                let listened = sockets
                    .iter()
                    .filter(|(_, l, _)| l.port() == PORT || l.port() == OUT_PORT)
                    .filter(|(s, _, _)| round == 1 || s != "03" || requests_traced)
                    .count();
                assert!(
                    fast >= listened,
                    "round {round}: the fast path was on for {fast} of {listened} sockets to a \
                     listener"
                );
            }
            drop((v4, v6, v4_server, v6_server, looped, looped_server, out));
            drop((client_listener, out_listener));
        })
        .unwrap();
}

/// The filter's bits spread: a /16 of sources sets bits all over the filter (the unit test in
/// synguard_common checks the hash); here, that a rebuild from an empty table leaves the
/// filter empty of them, so sources whose sockets are gone stop costing the lookup.
#[test]
fn a_rebuild_forgets_sources_whose_sockets_are_gone() {
    let lab = cookie_lab();
    lab.server
        .enter(|| {
            let _listener = TcpListener::bind(("::", PORT)).unwrap();
            let mut program = InKernel::load(&Config {
                mode: Mode::Off as u32,
                ..config()
            });
            // In mode off every SYN goes to the kernel, and its source is noted.
            let src = SocketAddr::from((Ipv4Addr::new(198, 18, 201, 7), 40_000));
            let dst = SocketAddr::from((SERVER_V4, PORT));
            program.run(&syn(src, dst));
            let bit = owners::bit_of_bytes(&[198, 18, 201, 7]).unwrap();
            assert!(program.owner_bits(0).has(bit) && program.owner_bits(1).has(bit));
            // The kernel made no socket of it (tcp_syncookies=2, and BPF_PROG_TEST_RUN never
            // hands the frame over): after two rebuilds, neither generation has it.
            program.rebuild_owners();
            program.rebuild_owners();
            let empty = |bits: OwnerBits| !bits.has(bit);
            assert!(empty(program.owner_bits(0)) && empty(program.owner_bits(1)));
        })
        .unwrap();
}

/// The listener epoch moves when a listener opens or closes, and only then: an accepted
/// connection's socket is cloned from its listener, state included, so the tracepoint reports
/// it as leaving LISTEN; counting those stopped the fast path whenever clients connected.
#[test]
fn the_listener_epoch_moves_for_listeners_not_for_accepted_connections() {
    const CONNECTIONS: usize = 20;
    let lab = cookie_lab();
    let client = lab.client.clone();
    lab.server
        .enter(|| {
            let listener = TcpListener::bind(("::", PORT)).unwrap();
            let program = InKernel::load(&config());
            let epoch = || program.owners.listener_epoch();
            let before = epoch();
            let clients = client
                .enter(|| {
                    (0..CONNECTIONS)
                        .map(|_| TcpStream::connect((SERVER_V4, PORT)).unwrap())
                        .collect::<Vec<_>>()
                })
                .unwrap();
            let accepted: Vec<_> = (0..CONNECTIONS)
                .map(|_| listener.accept().unwrap())
                .collect();
            // The epoch is the whole machine's: listeners other tests open meanwhile move it
            // too, a few times at most. Counting accepted connections moved it once each.
            let moved = epoch() - before;
            assert!(
                moved < CONNECTIONS as u64,
                "{CONNECTIONS} accepted connections moved the epoch {moved} times"
            );
            let other = TcpListener::bind(("::", OUT_PORT)).unwrap();
            let opened = epoch();
            assert!(opened > before, "a new listener did not move the epoch");
            drop(other);
            assert!(epoch() > opened, "a closed listener did not move the epoch");
            drop((clients, accepted));
        })
        .unwrap();
}

/// An ACK of `src` to `dst` (IPv4), with the lab's MACs.
fn ack(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        panic!("IPv4 only");
    };
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
        .ipv4(s.octets(), d.octets(), 64)
        .tcp(src.port(), dst.port(), 1000, 502)
        .ack(2000)
        .write(&mut frame, &[])
        .unwrap();
    frame
}

/// ACKs of an established connection pass without the socket lookup once a CPU found it
/// (xdp-ebpf/src/established.rs), at most `USES` in a row; and once any socket closes, the
/// connection is looked up again, so the ACK of one closed by a reset (no TIME_WAIT left) is
/// judged as what it now is, forged. The count of closes is the whole machine's, and other
/// tests close sockets meanwhile: a sequence a close interrupted is tried again.
#[test]
fn an_established_connection_is_remembered_until_a_socket_closes() {
    use synguard_common::established::{KnownConnection, USES};
    let lab = cookie_lab();
    let client = lab.client.clone();
    lab.server
        .enter(|| {
            let listener = TcpListener::bind(("::", PORT)).unwrap();
            let mut program = InKernel::load(&config());
            let stream = client
                .enter(|| TcpStream::connect((SERVER_V4, PORT)).unwrap())
                .unwrap();
            let (accepted, _) = listener.accept().unwrap();
            let src = stream.local_addr().unwrap();
            let frame = ack(src, SocketAddr::from((SERVER_V4, PORT)));
            // The entry of this connection, by its ports word (`established::key_of`).
            let ports = u64::from(u16::from_ne_bytes(src.port().to_be_bytes()))
                | u64::from(u16::from_ne_bytes(PORT.to_be_bytes())) << 16;
            let entry = |program: &InKernel| -> Option<KnownConnection> {
                program
                    .known_connections()
                    .into_iter()
                    .filter(|e| e.key[4] == ports)
                    .max_by_key(|e| e.closes)
            };
            let established = |program: &mut InKernel| {
                let out = program.run(&frame);
                assert_eq!(out.reasons(), [Reason::AckEstablished]);
            };

            // Learned, then USES ACKs without a lookup, then looked up and learned again.
            let mut seen = false;
            for _ in 0..50 {
                // Within USES + 1 ACKs the entry is spent and learned afresh, if not sooner.
                let mut learned = None;
                for _ in 0..=USES {
                    established(&mut program);
                    let now = entry(&program).expect("the connection was not remembered");
                    if now.uses == USES {
                        learned = Some(now);
                        break;
                    }
                }
                let learned = learned.expect("the entry never came back to its full uses");
                for _ in 0..USES {
                    established(&mut program);
                }
                let spent = entry(&program).unwrap();
                established(&mut program);
                let again = entry(&program).unwrap();
                if spent.closes != learned.closes || again.closes != learned.closes {
                    continue;
                }
                assert_eq!(spent.uses, 0, "{USES} ACKs did not spend the entry's uses");
                assert_eq!(again.uses, USES, "a spent entry was not looked up again");
                seen = true;
                break;
            }
            assert!(seen, "50 tries were all interrupted by closes elsewhere");

            // A reset: the socket is gone at once, and with it the reason to pass its ACKs.
            established(&mut program);
            let accepted = Socket::from(accepted);
            accepted.set_linger(Some(Duration::ZERO)).unwrap();
            drop(accepted);
            let out = program.run(&frame);
            assert_eq!(
                out.reasons(),
                [Reason::AckForged],
                "the ACK of a connection that was reset passed as established"
            );
            drop(stream);
        })
        .unwrap();
}
