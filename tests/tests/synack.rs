//! The SYN-ACKs synguard's XDP program writes, checked in the kernel with BPF_PROG_TEST_RUN.
//!
//! The program runs on a thread inside a lab namespace with a real listener, because the
//! cookie helpers look sockets up in the caller's namespace. Each SYN-ACK must equal, byte for
//! byte, the one etherparse's builder makes from the same fields (checksums included), and
//! etherparse's parser must read back the options we meant. The cookie itself is proven by
//! sending the client's ACK back through the program.

use etherparse::{
    IpHeaders, Ipv4Header, Ipv6Header, NetHeaders, PacketBuilder, PacketHeaders, TcpHeader,
    TcpOptionElement, TransportHeader, VlanId,
};
use synguard_common::{
    Config, Mode, Reason,
    classify::tcp_flags::{CWR, ECE},
    config::flags,
};
use synguard_tests::{InKernel, XDP_DROP, XDP_PASS, XDP_TX, in_lab, insert_ipv6_extensions};

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0xc6, 0x12, 0, 2];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0xc6, 0x12, 0, 1];
const CLIENT_V4: [u8; 4] = [198, 18, 0, 2];
const SERVER_V4: [u8; 4] = [198, 18, 0, 1];
const CLIENT_V6: [u8; 16] = [0xfd, 0, 1, 0x98, 0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const SERVER_V6: [u8; 16] = [0xfd, 0, 1, 0x98, 0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const PORT: u16 = 80;
const CLIENT_PORT: u16 = 40000;
const ISN: u32 = 0x1234_5678;
const CLIENT_TSVAL: u32 = 0x0102_0304;

fn config(mode: Mode) -> Config {
    Config {
        mode: mode as u32,
        flags: flags::ALL_PORTS | flags::TIMESTAMPS,
        ..Config::DEFAULT
    }
}

/// The program, loaded in `mode`.
struct Program(InKernel);

impl Program {
    fn load(mode: Mode) -> Program {
        Program(InKernel::load(&config(mode)))
    }

    /// Runs one frame; returns the XDP code, the frame as it came out, and the reasons that
    /// were counted.
    fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>, Vec<Reason>) {
        let outcome = self.0.run(frame);
        let reasons = outcome.reasons();
        (outcome.code, outcome.frame, reasons)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Family {
    V4,
    V6,
}

#[derive(Clone, Copy, Debug)]
enum Vlans {
    None,
    One,
    Two,
}

/// A frame from client to server (or, with `reply`, from server to client).
fn frame(family: Family, vlans: Vlans, tcp: TcpHeader, payload: &[u8], reply: bool) -> Vec<u8> {
    let (src_mac, dst_mac) = if reply {
        (SERVER_MAC, CLIENT_MAC)
    } else {
        (CLIENT_MAC, SERVER_MAC)
    };
    let ip = match family {
        Family::V4 => {
            let (src, dst) = if reply {
                (SERVER_V4, CLIENT_V4)
            } else {
                (CLIENT_V4, SERVER_V4)
            };
            let mut ip = Ipv4Header::new(0, 64, etherparse::IpNumber::TCP, src, dst).unwrap();
            ip.dont_fragment = true;
            ip.identification = 0;
            IpHeaders::Ipv4(ip, Default::default())
        }
        Family::V6 => {
            let (source, destination) = if reply {
                (SERVER_V6, CLIENT_V6)
            } else {
                (CLIENT_V6, SERVER_V6)
            };
            IpHeaders::Ipv6(
                Ipv6Header {
                    source,
                    destination,
                    hop_limit: 64,
                    ..Default::default()
                },
                Default::default(),
            )
        }
    };
    let eth = PacketBuilder::ethernet2(src_mac, dst_mac);
    let vlan = |id| VlanId::try_new(id).unwrap();
    let mut out = Vec::new();
    match vlans {
        Vlans::None => eth.ip(ip).tcp_header(tcp).write(&mut out, payload),
        Vlans::One => eth
            .single_vlan(vlan(10))
            .ip(ip)
            .tcp_header(tcp)
            .write(&mut out, payload),
        Vlans::Two => eth
            .double_vlan(vlan(100), vlan(10))
            .ip(ip)
            .tcp_header(tcp)
            .write(&mut out, payload),
    }
    .unwrap();
    out
}

fn syn(options: &[TcpOptionElement], extra_flags: u8) -> TcpHeader {
    let mut tcp = TcpHeader::new(CLIENT_PORT, PORT, ISN, 64240);
    tcp.syn = true;
    tcp.ece = extra_flags & ECE != 0;
    tcp.cwr = extra_flags & CWR != 0;
    tcp.set_options(options).unwrap();
    tcp
}

const LINUX_OPTIONS: [TcpOptionElement; 5] = [
    TcpOptionElement::MaximumSegmentSize(1460),
    TcpOptionElement::SelectiveAcknowledgementPermitted,
    TcpOptionElement::Timestamp(CLIENT_TSVAL, 0),
    TcpOptionElement::Noop,
    TcpOptionElement::WindowScale(7),
];

/// What the SYN-ACK should offer.
struct Expect {
    sack: bool,
    /// The client's window scale as encoded in the TSval (0xf: none), `None`: no timestamps.
    ts_bits: Option<u32>,
    wscale: bool,
    ecn: bool,
}

/// Builds the expected SYN-ACK with etherparse, taking the cookie, TSval, window and window
/// scale from `got`, and compares the bytes. Returns the cookie. (That the window and scale are
/// the kernel's own is what `kernel_oracle.rs` checks, against the kernel's SYN-ACK.)
fn check_synack(family: Family, vlans: Vlans, got: &[u8], expect: &Expect) -> u32 {
    let parsed = PacketHeaders::from_ethernet_slice(got).expect("etherparse reads the SYN-ACK");
    let Some(TransportHeader::Tcp(tcp)) = &parsed.transport else {
        panic!("no TCP header in {got:02x?}");
    };
    assert!(tcp.syn && tcp.ack && !tcp.rst && !tcp.fin, "SYN-ACK flags");
    assert_eq!(tcp.ece, expect.ecn, "ECE");
    assert_eq!(tcp.acknowledgment_number, ISN.wrapping_add(1));
    // Checksums, recomputed by etherparse.
    match &parsed.net {
        Some(NetHeaders::Ipv4(ip, _)) => {
            assert_eq!(
                ip.header_checksum,
                ip.calc_header_checksum(),
                "IPv4 checksum"
            );
            assert_eq!(
                tcp.checksum,
                tcp.calc_checksum_ipv4(ip, &[]).unwrap(),
                "TCP checksum"
            );
        }
        Some(NetHeaders::Ipv6(ip, _)) => {
            assert_eq!(
                tcp.checksum,
                tcp.calc_checksum_ipv6(ip, &[]).unwrap(),
                "TCP checksum"
            );
        }
        other => panic!("unexpected network header {other:?}"),
    }
    let options: Vec<TcpOptionElement> = tcp.options_iterator().map(|o| o.unwrap()).collect();
    let tsval = options.iter().find_map(|o| match o {
        TcpOptionElement::Timestamp(val, ecr) => {
            assert_eq!(*ecr, CLIENT_TSVAL, "TSecr echoes the client's TSval");
            Some(*val)
        }
        _ => None,
    });

    let mut want_options = vec![TcpOptionElement::MaximumSegmentSize(match family {
        Family::V4 => 1460,
        Family::V6 => 1440,
    })];
    match expect.ts_bits {
        // Without timestamps the SYN-ACK offers the MSS and nothing else.
        None => {
            assert_eq!(tsval, None, "no timestamp option");
            assert!(!expect.sack && !expect.wscale && !expect.ecn);
        }
        Some(bits) => {
            if expect.sack {
                want_options.push(TcpOptionElement::SelectiveAcknowledgementPermitted);
            } else {
                want_options.extend([TcpOptionElement::Noop, TcpOptionElement::Noop]);
            }
            let tsval = tsval.expect("a timestamp option");
            let mut want_bits = bits;
            if expect.sack {
                want_bits |= 1 << 4;
            }
            if expect.ecn {
                want_bits |= 1 << 5;
            }
            assert_eq!(tsval & 0x3f, want_bits, "options encoded in the TSval");
            want_options.push(TcpOptionElement::Timestamp(tsval, CLIENT_TSVAL));
            // No padding after the timestamp when there is no window scale: the kernel's
            // layout (tcp_options_write()).
            if expect.wscale {
                let scale = options.iter().find_map(|o| match o {
                    TcpOptionElement::WindowScale(s) => Some(*s),
                    _ => None,
                });
                let scale = scale.expect("a window scale option");
                want_options.push(TcpOptionElement::Noop);
                want_options.push(TcpOptionElement::WindowScale(scale));
            }
        }
    }

    let mut want_tcp = TcpHeader::new(PORT, CLIENT_PORT, tcp.sequence_number, tcp.window_size);
    want_tcp.syn = true;
    want_tcp.ack = true;
    want_tcp.ece = expect.ecn;
    want_tcp.acknowledgment_number = ISN.wrapping_add(1);
    want_tcp.set_options(&want_options).unwrap();
    let want = frame(family, vlans, want_tcp, &[], true);
    assert_eq!(
        got,
        want.as_slice(),
        "{family:?} {vlans:?}: SYN-ACK bytes\n got {got:02x?}\nwant {want:02x?}"
    );
    tcp.sequence_number
}

/// The client's ACK completing the handshake; `cookie_offset` 0 acknowledges the real cookie.
fn ack(family: Family, vlans: Vlans, cookie: u32, cookie_offset: u32) -> Vec<u8> {
    let mut tcp = TcpHeader::new(CLIENT_PORT, PORT, ISN.wrapping_add(1), 502);
    tcp.ack = true;
    tcp.acknowledgment_number = cookie.wrapping_add(1).wrapping_add(cookie_offset);
    frame(family, vlans, tcp, &[], false)
}

#[test]
fn syn_ack_bytes_for_each_family_vlan_layout_and_option_set() {
    in_lab(PORT, || {
        let mut program = Program::load(Mode::Cookie);
        let cases: Vec<(&str, Vec<TcpOptionElement>, u8, Expect)> = vec![
            (
                "Linux",
                LINUX_OPTIONS.to_vec(),
                0,
                Expect {
                    sack: true,
                    ts_bits: Some(7),
                    wscale: true,
                    ecn: false,
                },
            ),
            (
                "Linux asking for ECN",
                LINUX_OPTIONS.to_vec(),
                ECE | CWR,
                Expect {
                    sack: true,
                    ts_bits: Some(7),
                    wscale: true,
                    ecn: true,
                },
            ),
            (
                "ECE without CWR is no ECN request",
                LINUX_OPTIONS.to_vec(),
                ECE,
                Expect {
                    sack: true,
                    ts_bits: Some(7),
                    wscale: true,
                    ecn: false,
                },
            ),
            (
                "no options (hping3)",
                vec![],
                0,
                Expect {
                    sack: false,
                    ts_bits: None,
                    wscale: false,
                    ecn: false,
                },
            ),
            (
                "Windows order, no timestamps",
                vec![
                    TcpOptionElement::MaximumSegmentSize(1460),
                    TcpOptionElement::Noop,
                    TcpOptionElement::WindowScale(8),
                    TcpOptionElement::Noop,
                    TcpOptionElement::Noop,
                    TcpOptionElement::SelectiveAcknowledgementPermitted,
                ],
                ECE | CWR,
                Expect {
                    sack: false,
                    ts_bits: None,
                    wscale: false,
                    ecn: false,
                },
            ),
            (
                "timestamps only",
                vec![
                    TcpOptionElement::Noop,
                    TcpOptionElement::Noop,
                    TcpOptionElement::Timestamp(CLIENT_TSVAL, 0),
                ],
                0,
                Expect {
                    sack: false,
                    ts_bits: Some(0xf),
                    wscale: false,
                    ecn: false,
                },
            ),
            (
                "odd order and padding",
                vec![
                    TcpOptionElement::Timestamp(CLIENT_TSVAL, 0),
                    TcpOptionElement::WindowScale(14),
                    TcpOptionElement::Noop,
                    TcpOptionElement::Noop,
                    TcpOptionElement::Noop,
                    TcpOptionElement::SelectiveAcknowledgementPermitted,
                    TcpOptionElement::MaximumSegmentSize(1200),
                ],
                0,
                Expect {
                    sack: true,
                    ts_bits: Some(14),
                    wscale: true,
                    ecn: false,
                },
            ),
        ];
        for family in [Family::V4, Family::V6] {
            for vlans in [Vlans::None, Vlans::One, Vlans::Two] {
                for (name, options, extra_flags, expect) in &cases {
                    let what = format!("{family:?} {vlans:?} {name}");
                    let syn = frame(family, vlans, syn(options, *extra_flags), &[], false);
                    let (code, out, why) = program.run(&syn);
                    assert_eq!(code, XDP_TX, "{what}: {why:?}");
                    assert!(
                        matches!(
                            why.as_slice(),
                            [Reason::CookieRaw | Reason::CookieStamped | Reason::CookieNoLookup]
                        ),
                        "{what}: {why:?}"
                    );
                    let cookie = check_synack(family, vlans, &out, expect);

                    // The kernel's own check (__cookie_v4/v6_check, via the program's ACK
                    // path) accepts the cookie. Its low 24 bits are a hash plus the MSS
                    // table index (0-3, net/ipv4/syncookies.c), so cookie+1 can be a valid
                    // cookie for another MSS; +4 is out of the table for every index.
                    let (code, _, why) = program.run(&ack(family, vlans, cookie, 0));
                    assert_eq!(
                        (code, why),
                        (XDP_PASS, vec![Reason::AckCookieValid]),
                        "{what}"
                    );
                    let (code, _, why) = program.run(&ack(family, vlans, cookie, 4));
                    assert_eq!((code, why), (XDP_DROP, vec![Reason::AckForged]), "{what}");
                }
            }
        }
    });
}

/// Every segment the kernel would check for a cookie (ACK set, SYN and RST clear:
/// cookie_v4_check()) gets the forged-ACK check, not only the bare ACK: a forged FIN+ACK or
/// PSH+ACK never reaches the kernel, and a valid cookie still passes with FIN set.
#[test]
fn fin_ack_psh_ack_and_urg_ack_are_judged_like_acks() {
    in_lab(PORT, || {
        let mut program = Program::load(Mode::Cookie);
        for family in [Family::V4, Family::V6] {
            let (code, out, _) = program.run(&frame(
                family,
                Vlans::None,
                syn(&LINUX_OPTIONS, 0),
                &[],
                false,
            ));
            assert_eq!(code, XDP_TX);
            let cookie =
                u32::from_be_bytes(out[14 + ip_len(family) + 4..][..4].try_into().unwrap());
            let segment = |offset: u32, set: &dyn Fn(&mut TcpHeader)| {
                let mut tcp = TcpHeader::new(CLIENT_PORT, PORT, ISN.wrapping_add(1), 502);
                tcp.ack = true;
                tcp.acknowledgment_number = cookie.wrapping_add(1).wrapping_add(offset);
                set(&mut tcp);
                frame(family, Vlans::None, tcp, &[], false)
            };
            let fin = |t: &mut TcpHeader| t.fin = true;
            let psh = |t: &mut TcpHeader| t.psh = true;
            let urg = |t: &mut TcpHeader| t.urg = true;
            for (name, set) in [
                ("FIN+ACK", &fin as &dyn Fn(&mut TcpHeader)),
                ("PSH+ACK", &psh),
                ("URG+ACK", &urg),
            ] {
                let (code, _, why) = program.run(&segment(0, set));
                assert_eq!(
                    (code, why),
                    (XDP_PASS, vec![Reason::AckCookieValid]),
                    "{family:?} {name}, valid cookie"
                );
                let (code, _, why) = program.run(&segment(4, set));
                assert_eq!(
                    (code, why),
                    (XDP_DROP, vec![Reason::AckForged]),
                    "{family:?} {name}, forged"
                );
            }
            // A FIN without ACK is never cookie-checked by the kernel: not ours to judge.
            let mut bare_fin = TcpHeader::new(CLIENT_PORT, PORT, ISN, 502);
            bare_fin.fin = true;
            let (code, _, why) = program.run(&frame(family, Vlans::None, bare_fin, &[], false));
            assert_eq!((code, why), (XDP_PASS, vec![]), "{family:?} FIN alone");
        }
    });
}

fn ip_len(family: Family) -> usize {
    match family {
        Family::V4 => 20,
        Family::V6 => 40,
    }
}

#[test]
fn syn_with_data_shrinks_to_the_syn_ack() {
    in_lab(PORT, || {
        let mut program = Program::load(Mode::Cookie);
        for family in [Family::V4, Family::V6] {
            let syn = frame(
                family,
                Vlans::One,
                syn(&LINUX_OPTIONS, 0),
                &[0x55; 100],
                false,
            );
            let (code, out, _) = program.run(&syn);
            assert_eq!(code, XDP_TX);
            let expect = Expect {
                sack: true,
                ts_bits: Some(7),
                wscale: true,
                ecn: false,
            };
            check_synack(family, Vlans::One, &out, &expect);
        }
    });
}

#[test]
fn the_stamping_helper_runs_every_10_ms_and_the_raw_one_otherwise() {
    in_lab(PORT, || {
        let mut program = Program::load(Mode::Cookie);
        let syn = frame(Family::V4, Vlans::None, syn(&LINUX_OPTIONS, 0), &[], false);
        let mut seen = Vec::new();
        let started = std::time::Instant::now();
        for _ in 0..200 {
            seen.extend(program.run(&syn).2);
        }
        // BPF_PROG_TEST_RUN runs on this thread's CPU; the stamp map is per CPU, so at most
        // one stamp per CPU this thread ran on and 10 ms, and one at the start.
        let windows = started.elapsed().as_millis() as usize / 10 + 1;
        let stamped = seen.iter().filter(|r| **r == Reason::CookieStamped).count();
        // The raw helper, after a lookup or without one (the fast path: this source owns no
        // socket here).
        let raw = seen
            .iter()
            .filter(|r| matches!(r, Reason::CookieRaw | Reason::CookieNoLookup))
            .count();
        assert!(
            (1..=2 * windows).contains(&stamped),
            "{windows} windows: {seen:?}"
        );
        assert!(raw >= 200 - 2 * windows && raw > 0, "{seen:?}");
        assert_eq!(stamped + raw, 200);
    });
}

#[test]
fn syns_the_kernel_must_handle_are_passed_untouched() {
    in_lab(PORT, || {
        let mut program = Program::load(Mode::Cookie);
        // No listener on port 81.
        let mut tcp = syn(&LINUX_OPTIONS, 0);
        tcp.destination_port = 81;
        let no_listener = frame(Family::V4, Vlans::None, tcp, &[], false);
        let (code, out, why) = program.run(&no_listener);
        assert_eq!((code, why), (XDP_PASS, vec![Reason::SynNoListener]));
        assert_eq!(out, no_listener, "untouched");
    });
}

/// A frame from the client whose IPv4 header carries `options` (a multiple of 4 bytes).
fn with_ipv4_options(tcp: TcpHeader, options: &[u8], fragment: bool) -> Vec<u8> {
    let mut ip = Ipv4Header::new(0, 64, etherparse::IpNumber::TCP, CLIENT_V4, SERVER_V4).unwrap();
    ip.dont_fragment = !fragment;
    ip.more_fragments = fragment;
    ip.identification = 0;
    ip.options = options.try_into().unwrap();
    let mut out = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
        .ip(IpHeaders::Ipv4(ip, Default::default()))
        .tcp_header(tcp)
        .write(&mut out, &[])
        .unwrap();
    out
}

/// A frame from the client with IPv6 extension headers (`(next header value, bytes)`, the
/// first byte of each set here) between the fixed header and TCP.
fn with_ipv6_extensions(tcp: TcpHeader, headers: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = frame(Family::V6, Vlans::None, tcp, &[], false);
    insert_ipv6_extensions(&mut out, 14, headers);
    out
}

const HOP_BY_HOP: &[u8] = &[0, 0, 1, 4, 0, 0, 0, 0];
const DESTINATION: &[u8] = &[0, 0, 1, 4, 0, 0, 0, 0];
const ATOMIC_FRAGMENT: &[u8] = &[0, 0, 0, 0, 0, 0, 0, 7];
const FIRST_FRAGMENT: &[u8] = &[0, 0, 0, 1, 0, 0, 0, 7];

const LINUX: Expect = Expect {
    sack: true,
    ts_bits: Some(7),
    wscale: true,
    ecn: false,
};

/// A SYN behind IPv4 options the kernel does not echo, or behind IPv6 extension headers, gets
/// the SYN-ACK the kernel would send: a plain IP header, then TCP. Its cookie is valid, and
/// the ACK behind the same headers is judged like any other. (Issue 16: these SYNs were passed
/// to the kernel, so a flood carrying one such header walked past synguard.)
#[test]
fn syns_behind_ip_options_and_extension_headers_are_answered_with_a_plain_header() {
    in_lab(PORT, || {
        let mut program = Program::load(Mode::Cookie);
        let v4_ack = |cookie: u32, offset: u32, options: &[u8]| {
            let plain = ack(Family::V4, Vlans::None, cookie, offset);
            let tcp = TcpHeader::from_slice(&plain[34..]).unwrap().0;
            with_ipv4_options(tcp, options, false)
        };
        for (what, options) in [
            ("four NOPs", &[1u8, 1, 1, 1][..]),
            ("NOPs then EOL", &[1, 1, 1, 0]),
            ("Router Alert", &[148, 4, 0, 0]),
            (
                "an option kind the kernel ignores",
                &[130, 4, 0, 0, 1, 1, 1, 0],
            ),
        ] {
            let (code, out, why) =
                program.run(&with_ipv4_options(syn(&LINUX_OPTIONS, 0), options, false));
            assert_eq!(code, XDP_TX, "{what}: {why:?}");
            let cookie = check_synack(Family::V4, Vlans::None, &out, &LINUX);
            let (code, _, why) = program.run(&v4_ack(cookie, 0, options));
            assert_eq!(
                (code, why),
                (XDP_PASS, vec![Reason::AckCookieValid]),
                "{what}"
            );
            let (code, _, why) = program.run(&v4_ack(cookie, 4, options));
            assert_eq!((code, why), (XDP_DROP, vec![Reason::AckForged]), "{what}");
        }
        for (what, headers) in [
            ("Hop-by-Hop", vec![(0u8, HOP_BY_HOP)]),
            ("Destination Options", vec![(60, DESTINATION)]),
            ("atomic fragment", vec![(44, ATOMIC_FRAGMENT)]),
            (
                "all three",
                vec![(0, HOP_BY_HOP), (60, DESTINATION), (44, ATOMIC_FRAGMENT)],
            ),
        ] {
            let (code, out, why) =
                program.run(&with_ipv6_extensions(syn(&LINUX_OPTIONS, 0), &headers));
            assert_eq!(code, XDP_TX, "{what}: {why:?}");
            let cookie = check_synack(Family::V6, Vlans::None, &out, &LINUX);
            let plain = ack(Family::V6, Vlans::None, cookie, 0);
            let tcp = TcpHeader::from_slice(&plain[54..]).unwrap().0;
            let (code, _, why) = program.run(&with_ipv6_extensions(tcp, &headers));
            assert_eq!(
                (code, why),
                (XDP_PASS, vec![Reason::AckCookieValid]),
                "{what}"
            );
            let forged = TcpHeader::from_slice(&ack(Family::V6, Vlans::None, cookie, 4)[54..])
                .unwrap()
                .0;
            let (code, _, why) = program.run(&with_ipv6_extensions(forged, &headers));
            assert_eq!((code, why), (XDP_DROP, vec![Reason::AckForged]), "{what}");
        }
    });
}

/// What cannot be answered as the kernel would, or judged at all, is dropped while cookies are
/// in force, counted in `monitor`, and passed in `off`: IPv4 options the kernel echoes (or
/// rejects), a SYN or ACK in the first of several fragments, an IPv6 chain that cannot be
/// walked. A later fragment, which carries no port, is passed in every mode: without its first
/// fragment the kernel cannot reassemble it (docs/operating.md).
#[test]
fn fragments_echoed_options_and_unwalkable_chains_are_dropped_in_cookie_mode_only() {
    in_lab(PORT, || {
        let mut plain_ack = TcpHeader::new(CLIENT_PORT, PORT, ISN.wrapping_add(1), 502);
        plain_ack.ack = true;
        plain_ack.acknowledgment_number = 0x0bad_cafe;
        let five_deep: Vec<(u8, &[u8])> = vec![(60, DESTINATION); 5];
        let cases: Vec<(&str, Vec<u8>, Reason)> = vec![
            (
                "SYN with Record Route",
                with_ipv4_options(syn(&LINUX_OPTIONS, 0), &[7, 7, 4, 0, 0, 0, 0, 0], false),
                Reason::SynIpOptions,
            ),
            (
                "SYN with a loose source route",
                with_ipv4_options(
                    syn(&LINUX_OPTIONS, 0),
                    &[131, 7, 4, 198, 18, 0, 9, 0],
                    false,
                ),
                Reason::SynIpOptions,
            ),
            (
                "SYN with a malformed option",
                with_ipv4_options(syn(&LINUX_OPTIONS, 0), &[99, 1, 0, 0], false),
                Reason::SynIpOptions,
            ),
            (
                "IPv4 SYN, first fragment",
                with_ipv4_options(syn(&LINUX_OPTIONS, 0), &[], true),
                Reason::TcpFragment,
            ),
            (
                "IPv4 ACK, first fragment",
                with_ipv4_options(plain_ack.clone(), &[], true),
                Reason::TcpFragment,
            ),
            (
                "IPv6 SYN, first fragment",
                with_ipv6_extensions(syn(&LINUX_OPTIONS, 0), &[(44, FIRST_FRAGMENT)]),
                Reason::TcpFragment,
            ),
            (
                "IPv6 SYN behind five headers",
                with_ipv6_extensions(syn(&LINUX_OPTIONS, 0), &five_deep),
                Reason::Ipv6Unjudged,
            ),
            (
                "IPv6 ACK behind five headers",
                with_ipv6_extensions(plain_ack.clone(), &five_deep),
                Reason::Ipv6Unjudged,
            ),
        ];
        for (mode, drops) in [
            (Mode::Cookie, true),
            (Mode::Monitor, false),
            (Mode::Off, false),
        ] {
            let mut program = Program::load(mode);
            for (what, frame, reason) in &cases {
                let (code, out, why) = program.run(frame);
                let want = match mode {
                    Mode::Cookie => (XDP_DROP, vec![*reason]),
                    Mode::Monitor => (XDP_PASS, vec![Reason::MonitorWouldDrop]),
                    _ => (XDP_PASS, vec![]),
                };
                assert_eq!((code, why), want, "{mode:?} {what}");
                if !drops {
                    assert_eq!(&out, frame, "{mode:?} {what}: untouched");
                }
            }
            // A later fragment is passed untouched in every mode.
            let mut later = with_ipv4_options(syn(&LINUX_OPTIONS, 0), &[], false);
            later[14 + 6..14 + 8].copy_from_slice(&0x0010u16.to_be_bytes());
            let (code, out, why) = program.run(&later);
            assert_eq!((code, why), (XDP_PASS, vec![]), "{mode:?} later fragment");
            assert_eq!(out, later);
        }
    });
}

#[test]
fn mode_changes_take_effect_on_the_next_packet_without_a_reload() {
    in_lab(PORT, || {
        // auto's rate windows are per CPU: the runs below must share one, so this thread stays
        // on one CPU (a migration between them made a fresh CPU close its first window).
        let mut cpu = nix::sched::CpuSet::new();
        cpu.set(0).unwrap();
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpu).unwrap();
        let mut program = Program::load(Mode::Off);
        let syn = frame(Family::V6, Vlans::Two, syn(&LINUX_OPTIONS, 0), &[], false);
        let forged = ack(Family::V6, Vlans::Two, 0xdead_beef, 0);

        let (code, out, why) = program.run(&syn);
        assert_eq!(
            (code, &why),
            (XDP_PASS, &vec![]),
            "off: passed, no decision"
        );
        assert_eq!(out, syn);

        program
            .0
            .control
            .set_config(&config(Mode::Monitor))
            .unwrap();
        let (code, out, why) = program.run(&syn);
        assert_eq!((code, why), (XDP_PASS, vec![Reason::MonitorWouldAnswer]));
        assert_eq!(out, syn, "monitor changes nothing");
        let (code, _, why) = program.run(&forged);
        assert_eq!((code, why), (XDP_PASS, vec![Reason::MonitorWouldDrop]));

        program.0.control.set_config(&config(Mode::Cookie)).unwrap();
        let (code, _, _) = program.run(&syn);
        assert_eq!(code, XDP_TX, "cookie: answered");
        let (code, _, why) = program.run(&forged);
        assert_eq!((code, why), (XDP_DROP, vec![Reason::AckForged]));

        // Auto, far below its threshold: passed.
        program
            .0
            .control
            .set_config(&Config {
                auto_threshold_pps: 1_000_000,
                ..config(Mode::Auto)
            })
            .unwrap();
        let (code, _, why) = program.run(&syn);
        assert_eq!((code, why), (XDP_PASS, vec![Reason::SynBelowThreshold]));
        // A threshold of 1 SYN/s: the next window close switches to cookies.
        program
            .0
            .control
            .set_config(&Config {
                auto_threshold_pps: 1,
                ..config(Mode::Auto)
            })
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (code, _, _) = program.run(&syn);
        assert_eq!(code, XDP_TX, "auto above the threshold: answered");
        assert!(program.0.control.auto_summary().unwrap().under_attack);
    });
}

#[test]
fn auto_switches_on_one_ports_rate_alone() {
    in_lab(PORT, || {
        let mut program = Program::load(Mode::Auto);
        // Overall threshold out of reach; 1,000 SYN/s to one port is 16 per 16.8 ms window.
        program
            .0
            .control
            .set_config(&Config {
                auto_threshold_pps: 1_000_000_000,
                auto_port_threshold_pps: 1_000,
                ..config(Mode::Auto)
            })
            .unwrap();
        let syn = frame(Family::V4, Vlans::None, syn(&LINUX_OPTIONS, 0), &[], false);
        let (code, _, why) = program.run(&syn);
        assert_eq!((code, why), (XDP_PASS, vec![Reason::SynBelowThreshold]));
        // 40 SYNs take a few ms: at most one window boundary, so one window gets 20 or more.
        let answered = (0..40).filter(|_| program.run(&syn).0 == XDP_TX).count();
        assert!(answered > 0, "the port's rate started cookies");
        assert!(answered < 40, "not before its threshold");
        assert!(program.0.control.auto_summary().unwrap().under_attack);
    });
}

#[test]
fn unprotected_ports_are_left_alone_when_ports_are_listed() {
    in_lab(PORT, || {
        let mut program = Program::load(Mode::Cookie);
        let mut listed = config(Mode::Cookie);
        listed.flags &= !flags::ALL_PORTS;
        program.0.control.set_config(&listed).unwrap();
        program
            .0
            .control
            .set_ports(&"443,8000-8100".parse().unwrap())
            .unwrap();
        let syn = frame(Family::V4, Vlans::None, syn(&LINUX_OPTIONS, 0), &[], false);
        let (code, out, why) = program.run(&syn);
        assert_eq!((code, why), (XDP_PASS, vec![Reason::SynUnprotectedPort]));
        assert_eq!(out, syn);

        program.0.control.set_ports(&"80".parse().unwrap()).unwrap();
        assert_eq!(program.run(&syn).0, XDP_TX, "listed now");
        // A listed port is protected without a listener too: a forged ACK to it is dropped.
        let mut tcp = TcpHeader::new(CLIENT_PORT, 80, 1, 100);
        tcp.ack = true;
        tcp.acknowledgment_number = 42;
        let (code, _, why) = program.run(&frame(Family::V4, Vlans::None, tcp, &[], false));
        assert_eq!((code, why), (XDP_DROP, vec![Reason::AckForged]));
    });
}

#[test]
fn segments_not_addressed_to_this_host_are_left_to_the_kernel() {
    in_lab(PORT, || {
        let mut program = Program::load(Mode::Cookie);
        let segment = |dst_mac: [u8; 6], dst: [u8; 4], ack: bool| {
            let tcp = etherparse::PacketBuilder::ethernet2(CLIENT_MAC, dst_mac)
                .ipv4(CLIENT_V4, dst, 64)
                .tcp(CLIENT_PORT, PORT, ISN, 64240);
            let mut out = Vec::new();
            match ack {
                true => tcp.ack(0xdead_beef).write(&mut out, &[]),
                false => tcp.syn().write(&mut out, &[]),
            }
            .unwrap();
            out
        };
        // The listener is on every address, so the socket lookup finds it for any of these.
        let (code, _, why) = program.run(&segment(SERVER_MAC, SERVER_V4, false));
        assert_eq!(
            (code, why.len()),
            (XDP_TX, 1),
            "to the host itself: answered"
        );
        let elsewhere = [
            (SERVER_MAC, [198, 18, 0, 99], "another host on the link"),
            (SERVER_MAC, [10, 1, 2, 3], "a routed destination"),
            (
                SERVER_MAC,
                [198, 18, 0, 255],
                "the subnet's broadcast address",
            ),
            (
                SERVER_MAC,
                [255, 255, 255, 255],
                "the limited broadcast address",
            ),
            (SERVER_MAC, [224, 0, 0, 1], "a multicast group"),
            (SERVER_MAC, [127, 0, 0, 1], "loopback, arriving on a NIC"),
            (
                [0xff; 6],
                SERVER_V4,
                "the host's address in a broadcast frame",
            ),
            (
                [0x01, 0, 0x5e, 0, 0, 1],
                SERVER_V4,
                "the host's address in a multicast frame",
            ),
        ];
        for (mac, dst, what) in elsewhere {
            for ack in [false, true] {
                let frame = segment(mac, dst, ack);
                let (code, out, why) = program.run(&frame);
                assert_eq!(
                    (code, why),
                    (XDP_PASS, vec![Reason::NotLocal]),
                    "{what}, ack {ack}"
                );
                assert_eq!(out, frame, "{what}: unchanged");
            }
        }
    });
}
