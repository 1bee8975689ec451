//! End to end in the lab: the real `synguard` binary attached to a veth in a namespace, real
//! packets from hping3 and real sockets, counters read back from /metrics.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use synguard_common::{Action, Class};
use synguard_lab::{HttpServer, Lab, MetricsText, Synguard, run_bounded, run_legit_clients};

/// A port nothing listens on: the server answers with RST, which the client ignores.
const CLOSED_PORT: &str = "9";

fn packets(m: &MetricsText, class: Class) -> f64 {
    m.sum("synguard_packets_total", &[("class", class.name())])
}

fn bytes(m: &MetricsText, class: Class) -> f64 {
    m.sum("synguard_bytes_total", &[("class", class.name())])
}

/// Sends exactly `count` packets from the client with hping3 and waits for it to finish.
fn hping3(lab: &Lab, count: u32, mode: &[&str]) {
    let mut cmd = lab.client.command("hping3");
    cmd.args([
        "-q",
        "-c",
        &count.to_string(),
        "-i",
        "u500",
        "-p",
        CLOSED_PORT,
    ])
    .args(mode)
    .arg(lab.server.ipv4.to_string());
    let out = run_bounded(&mut cmd, Duration::from_secs(30)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // hping3 exits 1 when no reply came back (RST-less modes); its summary, on stderr, tells
    // what it sent.
    assert!(
        stderr.contains(&format!("\n{count} packets transmitted")),
        "hping3 {mode:?} did not send {count} packets: {stdout} {stderr}"
    );
}

/// Polls /metrics until `class` reaches `want` packets (veth delivers in NAPI context, a
/// little after hping3 returns), for at most 5 s.
fn wait_for(sg: &Synguard, class: Class, want: f64) -> MetricsText {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = sg.metrics().unwrap();
        if packets(&m, class) >= want || Instant::now() > deadline {
            return m;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn counters_match_exactly_what_hping3_sent() {
    let lab = Lab::new().unwrap();
    let sg = Synguard::start(&lab.server, &[]).unwrap();
    const N: u32 = 150;
    // hping3 mode, class, frame length (Ethernet 14 + IPv4 20 + TCP 20, or UDP 8, or ICMP 8).
    let cases: &[(&[&str], Class, f64)] = &[
        (&["-S"], Class::Syn, 54.0),
        (&["-S", "-A"], Class::SynAck, 54.0),
        (&["-A"], Class::Ack, 54.0),
        (&["-R"], Class::Rst, 54.0),
        (&["-F"], Class::Fin, 54.0),
        (&["-P"], Class::OtherTcp, 54.0),
        (&["--udp"], Class::NonTcp, 42.0),
        (&["--icmp"], Class::NonTcp, 42.0),
    ];
    let mut before = sg.metrics().unwrap();
    for (mode, class, frame_len) in cases {
        hping3(&lab, N, mode);
        let after = wait_for(&sg, *class, packets(&before, *class) + f64::from(N));
        for other in Class::ALL {
            // MLD reports from the client's address set-up may still trickle in.
            if other == Class::Ipv6Ext {
                continue;
            }
            let want = if other == *class { f64::from(N) } else { 0.0 };
            assert_eq!(
                packets(&after, other) - packets(&before, other),
                want,
                "hping3 {mode:?}: {} packets",
                other.name()
            );
        }
        assert_eq!(
            bytes(&after, *class) - bytes(&before, *class),
            f64::from(N) * frame_len,
            "hping3 {mode:?}: bytes"
        );
        // v0 passes everything.
        for action in [Action::Drop, Action::Tx, Action::Aborted] {
            assert_eq!(
                after.sum("synguard_packets_total", &[("action", action.name())]),
                0.0
            );
        }
        before = after;
    }
    sg.stop(Signal::SIGTERM).unwrap();
    assert!(
        !lab.server.xdp_attached().unwrap(),
        "detached after SIGTERM"
    );
}

#[test]
fn metrics_are_promtool_clean_and_complete() {
    let lab = Lab::new().unwrap();
    let sg = Synguard::start(
        &lab.server,
        &[
            "--syn-rate-per-source",
            "300",
            "--syn-burst-per-source",
            "40",
            "--max-synack-rate",
            "5000",
            "--allow",
            "192.0.2.0/24,2001:db8::/32",
        ],
    )
    .unwrap();
    let text = sg.metrics_raw().unwrap();

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; `cargo xtask setup` installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every class and action is exported from the first scrape, zeros included.
    let m = MetricsText::parse(&text).unwrap();
    for class in Class::ALL {
        for action in Action::ALL {
            let labels = [
                ("interface", lab.server.iface.as_str()),
                ("class", class.name()),
                ("action", action.name()),
            ];
            m.value("synguard_packets_total", &labels).unwrap();
            m.value("synguard_bytes_total", &labels).unwrap();
        }
    }
    assert_eq!(m.value("synguard_build_info", &[]).unwrap(), 1.0);
    // The configured limits and the maps' occupancy, as gauges.
    for (name, want) in [
        ("synguard_syn_rate_per_source_limit", 300.0),
        ("synguard_syn_burst_per_source_limit", 40.0),
        ("synguard_synack_cap_per_second", 5000.0),
        ("synguard_syn_pass_cap_per_second", 0.0),
        ("synguard_allow_list_entries", 2.0),
        ("synguard_deny_list_entries", 0.0),
        ("synguard_list_capacity_entries", 65536.0),
        ("synguard_source_buckets_capacity", 65536.0),
        ("synguard_attacks_total", 0.0),
    ] {
        assert_eq!(m.sum(name, &[]), want, "{name}");
    }

    // docs/metrics.md lists every metric, and only those.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
            .unwrap();
    let documented: std::collections::BTreeSet<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `synguard_"))
        .filter_map(|rest| rest.split('`').next())
        .collect();
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE synguard_"))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert_eq!(documented, exported, "docs/metrics.md's table vs /metrics");
    assert_eq!(
        m.value(
            "synguard_xdp_program_info",
            &[
                ("interface", lab.server.iface.as_str()),
                ("xdp_mode", "native")
            ]
        )
        .unwrap(),
        1.0
    );
    sg.stop(Signal::SIGINT).unwrap();
    assert!(!lab.server.xdp_attached().unwrap(), "detached after SIGINT");
}

/// A line-echo connection from the client to the server, opened before synguard is attached.
struct EchoConnection {
    client: BufReader<TcpStream>,
    server: thread::JoinHandle<()>,
}

impl EchoConnection {
    fn open(lab: &Lab, server_ip: std::net::IpAddr, port: u16) -> EchoConnection {
        let addr = SocketAddr::new(server_ip, port);
        let listener = lab
            .server
            .enter(move || TcpListener::bind(addr))
            .unwrap()
            .unwrap();
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if writeln!(writer, "{line}").is_err() {
                    break;
                }
            }
        });
        let client = lab
            .client
            .enter(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
            .unwrap()
            .unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        EchoConnection {
            client: BufReader::new(client),
            server,
        }
    }

    fn round_trip(&mut self, message: &str) {
        writeln!(self.client.get_mut(), "{message}").expect("write on the established connection");
        let mut echoed = String::new();
        self.client
            .read_line(&mut echoed)
            .expect("read on the established connection");
        assert_eq!(echoed.trim_end(), message);
    }

    fn close(self) {
        drop(self.client);
        self.server.join().unwrap();
    }
}

#[test]
fn established_connections_survive_attach_handover_takeover_and_detach() {
    let lab = Lab::new().unwrap();
    let mut connections = [
        EchoConnection::open(&lab, lab.server.ipv4.into(), 7000),
        EchoConnection::open(&lab, lab.server.ipv6.into(), 7001),
    ];
    for c in &mut connections {
        c.round_trip("before attach");
    }

    let sg = Synguard::start(&lab.server, &[]).unwrap();
    for c in &mut connections {
        c.round_trip("while attached");
    }
    let m = sg.metrics().unwrap();
    assert!(
        packets(&m, Class::Ack) >= 2.0,
        "both connections' segments were seen"
    );
    // A handover (SIGQUIT) and a takeover by the next start: the connections do not notice.
    let out = sg.stop(Signal::SIGQUIT).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(lab.server.xdp_attached().unwrap(), "left attached");
    for c in &mut connections {
        c.round_trip("between two controllers");
    }
    let sg = Synguard::start(&lab.server, &[]).unwrap();
    assert!(sg.log().contains("took over the program"), "{}", sg.log());
    for c in &mut connections {
        c.round_trip("after the takeover");
    }
    let m = sg.metrics().unwrap();
    assert!(
        packets(&m, Class::Ack) >= 6.0,
        "the counters carried over: {}",
        packets(&m, Class::Ack)
    );
    sg.stop(Signal::SIGTERM).unwrap();
    assert!(!lab.server.xdp_attached().unwrap());

    for mut c in connections {
        c.round_trip("after detach");
        c.close();
    }
}

#[test]
fn ipv6_syns_are_counted_and_http_works_on_both_families() {
    let lab = Lab::new().unwrap();
    let http = HttpServer::start(&lab.server, 8080).unwrap();
    let sg = Synguard::start(&lab.server, &[]).unwrap();
    let before = sg.metrics().unwrap();

    // Each connect to a closed port is one SYN, answered by one RST.
    const N: u32 = 40;
    let closed: SocketAddr = format!("[{}]:{CLOSED_PORT}", lab.server.ipv6)
        .parse()
        .unwrap();
    let refused = lab
        .client
        .enter(move || {
            (0..N)
                .filter(|_| {
                    TcpStream::connect_timeout(&closed, Duration::from_secs(2))
                        .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
                })
                .count()
        })
        .unwrap();
    assert_eq!(refused, N as usize, "every connect was refused by an RST");
    let after = wait_for(&sg, Class::Syn, packets(&before, Class::Syn) + f64::from(N));
    assert_eq!(
        packets(&after, Class::Syn) - packets(&before, Class::Syn),
        f64::from(N)
    );
    // Ethernet 14 + IPv6 40 + TCP 20 + the options Linux puts in a SYN (MSS, SACK-permitted,
    // timestamps, window scale: 20 bytes).
    assert_eq!(
        bytes(&after, Class::Syn) - bytes(&before, Class::Syn),
        f64::from(N) * 94.0
    );

    for ip in [
        lab.server.ipv4.to_string(),
        format!("[{}]", lab.server.ipv6),
    ] {
        let addr: SocketAddr = format!("{ip}:8080").parse().unwrap();
        let report = run_legit_clients(
            &lab.client,
            addr,
            20,
            Duration::ZERO,
            Duration::from_secs(2),
        )
        .unwrap();
        assert_eq!(
            report.succeeded, 20,
            "HTTP to {addr}: {:?}",
            report.first_error
        );
    }
    assert!(http.served() >= 40);
    sg.stop(Signal::SIGTERM).unwrap();
}

#[test]
fn generic_mode_when_asked_for() {
    let lab = Lab::new().unwrap();
    let sg = Synguard::start(&lab.server, &["--xdp-mode", "skb"]).unwrap();
    let link = lab
        .server
        .exec("ip", &["-d", "link", "show", "dev", &lab.server.iface])
        .unwrap();
    assert!(
        link.contains("xdpgeneric"),
        "attached in generic mode: {link}"
    );
    hping3(&lab, 25, &["-S"]);
    let m = wait_for(&sg, Class::Syn, 25.0);
    assert_eq!(packets(&m, Class::Syn), 25.0);
    assert_eq!(
        m.value("synguard_xdp_program_info", &[("xdp_mode", "skb")])
            .unwrap(),
        1.0
    );
    sg.stop(Signal::SIGTERM).unwrap();
    assert!(!lab.server.xdp_attached().unwrap());
}

/// `--auto-threshold 4x`: the threshold follows four times the learned SYN rate, above its
/// floor (that floods are left out of the learning is `baseline.rs`'s unit test).
#[test]
fn a_relative_threshold_is_learned_from_normal_traffic() {
    let lab = Lab::new().unwrap();
    let _http = HttpServer::start(&lab.server, 80).unwrap();
    let sg = Synguard::start(
        &lab.server,
        &[
            "--mode",
            "auto",
            "--auto-threshold",
            "4x",
            "--auto-threshold-min",
            "500",
            "--auto-baseline-secs",
            "1",
        ],
    )
    .unwrap();
    let threshold = |sg: &Synguard| {
        sg.metrics()
            .unwrap()
            .sum("synguard_auto_threshold_syn_per_second", &[])
    };
    assert_eq!(
        threshold(&sg),
        500.0,
        "the floor until a baseline is learned"
    );
    // About 200 SYN/s for 4 s: four time constants, so the baseline is within 2 % of it.
    let target: SocketAddr = (lab.server.ipv4, 80).into();
    let started = Instant::now();
    let calm = run_legit_clients(
        &lab.client,
        target,
        800,
        Duration::from_millis(5),
        Duration::from_secs(1),
    )
    .unwrap();
    let rate = f64::from(calm.succeeded) / started.elapsed().as_secs_f64();
    assert_eq!(calm.succeeded, 800);
    let learned = threshold(&sg);
    eprintln!(
        "{rate:.0} SYN/s for {:?}: threshold {learned}",
        started.elapsed()
    );
    assert!(
        (3.0 * rate..=5.0 * rate).contains(&learned),
        "threshold {learned} for a SYN rate of {rate:.0}/s and a factor of 4: {}",
        sg.log()
    );
    assert!(
        !sg.log().contains("SYN flood"),
        "normal traffic is no attack: {}",
        sg.log()
    );
    let log = sg.stop(Signal::SIGTERM).unwrap();
    assert!(log.status.success(), "{log:?}");
}
