//! SYN cookies from XDP, end to end: real kernel clients connect through synguard's cookie
//! path in the lab, the server's kernel builds the connections from the cookie ACKs, and data
//! flows with the same TCP options as after a normal handshake.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    thread,
    time::Duration,
};

use nix::sys::signal::Signal;
use synguard_common::Reason;
use synguard_lab::{Lab, MetricsText, Netns, SynShape, Synguard, run_bounded, syn_flood};
use synguard_tests::{cookies_sent, tcp_info};

const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_SACK: u8 = 2;
const TCPI_OPT_WSCALE: u8 = 4;
const DATA: usize = 1 << 20;

/// What both ends agreed on: options, and (snd, rcv) window scales.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Agreed {
    options: u8,
    client_wscale: (u8, u8),
    server_wscale: (u8, u8),
}

fn wscales(info: &libc::tcp_info) -> (u8, u8) {
    (
        info.tcpi_snd_rcv_wscale & 0x0f,
        info.tcpi_snd_rcv_wscale >> 4,
    )
}

/// Connects from the client namespace, sends 1 MiB each way, and returns what TCP_INFO says on
/// both sides.
fn connect_and_exchange(lab: &Lab, server_ip: IpAddr, port: u16) -> Agreed {
    let addr = SocketAddr::new(server_ip, port);
    let listener = lab
        .server
        .enter(move || TcpListener::bind(addr))
        .unwrap()
        .unwrap();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let info = tcp_info(&stream);
        let mut buf = vec![0u8; DATA];
        stream.read_exact(&mut buf).expect("server reads 1 MiB");
        stream.write_all(&buf).expect("server writes 1 MiB");
        info
    });
    let mut client = lab
        .client
        .enter(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
        .unwrap()
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let client_info = tcp_info(&client);
    let data: Vec<u8> = (0..DATA).map(|i| (i * 7) as u8).collect();
    client.write_all(&data).expect("client writes 1 MiB");
    let mut back = vec![0u8; DATA];
    client
        .read_exact(&mut back)
        .expect("client reads 1 MiB back");
    assert!(back == data, "data came back intact");
    let server_info = server.join().unwrap();
    assert_eq!(
        client_info.tcpi_options, server_info.tcpi_options,
        "both ends agree on options"
    );
    Agreed {
        options: client_info.tcpi_options,
        client_wscale: wscales(&client_info),
        server_wscale: wscales(&server_info),
    }
}

/// `n` segments from one spoofed source to the server's port 8080, with hping3's `flags`
/// (hping3 picks the sequence and acknowledgment numbers: none is a valid cookie).
fn hping3(lab: &Lab, flags: &[&str], n: u32) {
    let mut cmd = lab.client.command("hping3");
    cmd.arg("-q")
        .args(flags)
        .args(["-p", "8080", "-a", "198.18.200.9", "-i", "u1"])
        .args(["-c", &n.to_string()])
        .arg(lab.server.ipv4.to_string());
    let out = run_bounded(&mut cmd, Duration::from_secs(60)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("\n{n} packets transmitted")),
        "{stderr}"
    );
}

/// The metrics once `reason` has been counted `want` times (the counters are read at scrape
/// time, a little after the packets).
fn metrics_once(sg: &Synguard, reason: Reason, want: f64) -> MetricsText {
    let mut m = sg.metrics().unwrap();
    for _ in 0..50 {
        if decisions(&m, reason) >= want {
            break;
        }
        thread::sleep(Duration::from_millis(100));
        m = sg.metrics().unwrap();
    }
    m
}

fn decisions(m: &MetricsText, reason: Reason) -> f64 {
    m.sum("synguard_decisions_total", &[("reason", reason.name())])
}

#[test]
fn kernel_clients_connect_through_cookies_with_the_options_of_a_normal_handshake() {
    let lab = Lab::new().unwrap();
    let families: [IpAddr; 2] = [lab.server.ipv4.into(), lab.server.ipv6.into()];

    // What a normal handshake gives, synguard absent.
    let normal: Vec<Agreed> = families
        .iter()
        .enumerate()
        .map(|(i, ip)| connect_and_exchange(&lab, *ip, 7100 + i as u16))
        .collect();
    for agreed in &normal {
        assert_eq!(
            agreed.options & (TCPI_OPT_TIMESTAMPS | TCPI_OPT_SACK | TCPI_OPT_WSCALE),
            TCPI_OPT_TIMESTAMPS | TCPI_OPT_SACK | TCPI_OPT_WSCALE,
            "the lab's kernels negotiate everything normally: {agreed:?}"
        );
    }

    let sg = Synguard::start(&lab.server, &["--mode", "cookie"]).unwrap();
    // No scrape between the two readings: a scrape is a loopback connection, and with
    // tcp_syncookies=2 the kernel answers its SYN with a cookie of its own.
    let sent_before = lab.server.netstat("TcpExtSyncookiesSent").unwrap();
    let recv_before = lab.server.netstat("TcpExtSyncookiesRecv").unwrap();
    for (i, ip) in families.iter().enumerate() {
        let agreed = connect_and_exchange(&lab, *ip, 7200 + i as u16);
        assert_eq!(
            agreed, normal[i],
            "{ip}: same options as a normal handshake"
        );
    }
    assert_eq!(
        lab.server.netstat("TcpExtSyncookiesRecv").unwrap() - recv_before,
        2,
        "the kernel built both connections from cookie ACKs"
    );
    assert_eq!(
        lab.server.netstat("TcpExtSyncookiesSent").unwrap(),
        sent_before,
        "XDP sent every SYN-ACK; the kernel sent none"
    );
    let m = sg.metrics().unwrap();
    assert_eq!(cookies_sent(&m), 2.0, "one SYN-ACK from XDP per connection");
    assert_eq!(decisions(&m, Reason::AckCookieValid), 2.0);
    sg.stop(Signal::SIGTERM).unwrap();
}

#[test]
fn clients_without_timestamps_sack_or_window_scaling_still_connect() {
    let lab = Lab::new().unwrap();
    let sg = Synguard::start(&lab.server, &["--mode", "cookie"]).unwrap();
    let cases = [
        ("net.ipv4.tcp_timestamps", TCPI_OPT_TIMESTAMPS),
        ("net.ipv4.tcp_sack", TCPI_OPT_SACK),
        ("net.ipv4.tcp_window_scaling", TCPI_OPT_WSCALE),
    ];
    let mut port = 7300;
    for (key, option) in cases {
        lab.client.set_sysctl(key, "0").unwrap();
        for ip in [IpAddr::from(lab.server.ipv4), lab.server.ipv6.into()] {
            let agreed = connect_and_exchange(&lab, ip, port);
            port += 1;
            assert_eq!(
                agreed.options & option,
                0,
                "{key}=0 on the client: {agreed:?}"
            );
            if option == TCPI_OPT_TIMESTAMPS {
                // The kernel can only learn SACK and window scaling from the echoed timestamp.
                assert_eq!(agreed.options & (TCPI_OPT_SACK | TCPI_OPT_WSCALE), 0);
            } else {
                assert_ne!(
                    agreed.options & TCPI_OPT_TIMESTAMPS,
                    0,
                    "{key}=0: {agreed:?}"
                );
            }
        }
        lab.client.set_sysctl(key, "1").unwrap();
    }
    let m = sg.metrics().unwrap();
    assert_eq!(cookies_sent(&m), 6.0);
    assert_eq!(decisions(&m, Reason::AckCookieValid), 6.0);
    sg.stop(Signal::SIGTERM).unwrap();
}

#[test]
fn forged_acks_are_dropped_and_create_no_sockets() {
    let lab = Lab::new().unwrap();
    let _listener = lab
        .server
        .enter(|| TcpListener::bind("0.0.0.0:8080"))
        .unwrap()
        .unwrap();
    let sg = Synguard::start(&lab.server, &["--mode", "cookie", "--ports", "8080"]).unwrap();
    let opens_before = lab.server.netstat("TcpPassiveOpens").unwrap();
    let recv_before = lab.server.netstat("TcpExtSyncookiesRecv").unwrap();
    let rsts_before = lab.server.netstat("TcpOutRsts").unwrap();
    const N: u32 = 100_000;
    hping3(&lab, &["-A"], N);
    // Read before any scrape: scrapes are loopback connections (see above).
    thread::sleep(Duration::from_millis(300));
    let opens_after = lab.server.netstat("TcpPassiveOpens").unwrap();
    let recv_after = lab.server.netstat("TcpExtSyncookiesRecv").unwrap();
    let rsts_after = lab.server.netstat("TcpOutRsts").unwrap();

    let m = metrics_once(&sg, Reason::AckForged, f64::from(N));
    assert_eq!(decisions(&m, Reason::AckForged), f64::from(N));
    assert_eq!(
        m.sum(
            "synguard_packets_total",
            &[("class", "ack"), ("action", "drop")]
        ),
        f64::from(N)
    );
    assert_eq!(opens_after, opens_before, "no connection was created");
    assert_eq!(recv_after, recv_before, "no cookie was accepted");
    // An ACK that reached the kernel would have drawn an RST.
    assert_eq!(rsts_after, rsts_before, "the kernel never saw them");
    sg.stop(Signal::SIGTERM).unwrap();
}

/// FIN+ACK and PSH+ACK floods are judged like ACK floods: the kernel would check each for a
/// cookie (cookie_v4_check()), so each must be dropped in XDP, counted as forged, and never
/// reach the kernel's check (`TcpExtSyncookiesFailed` flat while the listener is stamped).
/// A listener on port 8080 (bound to `bind` in the server namespace) and synguard protecting
/// it in cookie mode, after one real connection through synguard's cookies has stamped the
/// listener: from then on the kernel would check cookies on whatever reaches it.
fn stamped_listener(lab: &Lab, bind: &str) -> (TcpListener, Synguard) {
    let bind = bind.to_string();
    let listener = lab
        .server
        .enter(move || TcpListener::bind(bind))
        .unwrap()
        .unwrap();
    let sg = Synguard::start(&lab.server, &["--mode", "cookie", "--ports", "8080"]).unwrap();
    let addr = SocketAddr::new(lab.server.ipv4.into(), 8080);
    let client = lab
        .client
        .enter(move || TcpStream::connect_timeout(&addr, Duration::from_secs(2)))
        .unwrap()
        .unwrap();
    let _accepted = listener.accept().unwrap();
    drop(client);
    (listener, sg)
}

/// No connection came of what was sent: the listener has nothing to accept (the namespace's
/// counters cannot tell, since every metrics scrape is a connection too).
fn nothing_to_accept(listener: &TcpListener) {
    listener.set_nonblocking(true).unwrap();
    let accepted = listener.accept();
    assert!(
        matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a forged ACK made a connection: {accepted:?}"
    );
}

#[test]
fn forged_fin_ack_and_psh_ack_are_dropped_before_the_kernel_checks_them() {
    let lab = Lab::new().unwrap();
    let (listener, sg) = stamped_listener(&lab, "0.0.0.0:8080");
    const N: u32 = 100_000;
    let failed_before = lab.server.netstat("TcpExtSyncookiesFailed").unwrap();
    let rsts_before = lab.server.netstat("TcpOutRsts").unwrap();
    let forged_before = decisions(&sg.metrics().unwrap(), Reason::AckForged);
    for flag in ["-F", "-P"] {
        hping3(&lab, &[flag, "-A"], N);
    }
    thread::sleep(Duration::from_millis(300));
    let failed_after = lab.server.netstat("TcpExtSyncookiesFailed").unwrap();
    let rsts_after = lab.server.netstat("TcpOutRsts").unwrap();
    let m = metrics_once(&sg, Reason::AckForged, forged_before + f64::from(2 * N));
    assert_eq!(
        decisions(&m, Reason::AckForged) - forged_before,
        f64::from(2 * N)
    );
    assert_eq!(
        m.sum(
            "synguard_packets_total",
            &[("class", "fin"), ("action", "drop")]
        ),
        f64::from(N),
        "the FIN+ACKs, dropped"
    );
    assert_eq!(
        failed_after, failed_before,
        "the kernel checked none of them"
    );
    assert_eq!(rsts_after, rsts_before, "the kernel never saw them");
    nothing_to_accept(&listener);
    sg.stop(Signal::SIGTERM).unwrap();
}

fn sysctls(ns: &Netns) -> (String, String) {
    (
        ns.sysctl("net.ipv4.tcp_syncookies").unwrap(),
        ns.sysctl("net.ipv4.tcp_timestamps").unwrap(),
    )
}

#[test]
fn sysctls_are_set_while_running_and_restored_on_every_exit() {
    let lab = Lab::new().unwrap();
    // Values of our own choosing, so a restore to a default would not pass by accident.
    lab.server
        .set_sysctl("net.ipv4.tcp_syncookies", "0")
        .unwrap();
    lab.server
        .set_sysctl("net.ipv4.tcp_timestamps", "1")
        .unwrap();
    let before = sysctls(&lab.server);
    let state_dir = std::env::temp_dir().join(format!("{}-state", lab.server.name));
    let state_arg = state_dir.to_str().unwrap().to_string();
    let args = ["--mode", "cookie", "--state-dir", state_arg.as_str()];

    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        let sg = Synguard::start(&lab.server, &args).unwrap();
        assert_eq!(
            sysctls(&lab.server),
            ("2".into(), "2".into()),
            "set while running"
        );
        sg.stop(signal).unwrap();
        assert_eq!(sysctls(&lab.server), before, "restored after {signal}");
    }

    // SIGQUIT hands over: the values stay for the next start, which restores them at its end.
    let sg = Synguard::start(&lab.server, &args).unwrap();
    assert!(sg.stop(Signal::SIGQUIT).unwrap().status.success());
    assert_eq!(
        sysctls(&lab.server),
        ("2".into(), "2".into()),
        "left in force by a handover"
    );
    let sg = Synguard::start(&lab.server, &args).unwrap();
    sg.stop(Signal::SIGTERM).unwrap();
    assert_eq!(
        sysctls(&lab.server),
        before,
        "restored by the run that took over"
    );

    // kill -9: nothing is restored, but the next start knows the values to restore.
    let sg = Synguard::start(&lab.server, &args).unwrap();
    let killed = sg.kill().unwrap();
    assert!(!killed.status.success());
    assert_eq!(
        sysctls(&lab.server),
        ("2".into(), "2".into()),
        "left behind by kill -9"
    );
    let sg = Synguard::start(&lab.server, &args).unwrap();
    assert!(
        sg.log().contains("did not restore its sysctls"),
        "{}",
        sg.log()
    );
    sg.stop(Signal::SIGTERM).unwrap();
    assert_eq!(
        sysctls(&lab.server),
        before,
        "restored by the run after the crash"
    );
    let _ = std::fs::remove_dir_all(&state_dir);
}

#[test]
fn deny_and_allow_lists_from_flags_and_files() {
    let lab = Lab::new().unwrap();
    let _http = synguard_lab::HttpServer::start(&lab.server, 8080).unwrap();
    let target: SocketAddr = (lab.server.ipv4, 8080).into();
    let get =
        || synguard_lab::http_get(&lab.client, target, "/", Duration::from_millis(500)).is_ok();
    assert!(get(), "reachable before synguard");

    // The client's network denied: its packets never reach the server.
    let sg = Synguard::start(
        &lab.server,
        &["--mode", "cookie", "--deny", "198.18.0.0/24"],
    )
    .unwrap();
    assert!(!get(), "denied");
    let m = sg.metrics().unwrap();
    assert!(decisions(&m, Reason::ListDenied) >= 1.0);
    sg.stop(Signal::SIGTERM).unwrap();

    // The client's own address allowed from a file, inside the same denied network.
    let file = std::env::temp_dir().join(format!("{}-allow", lab.server.name));
    std::fs::write(&file, "# the lab client\n198.18.0.2/32\n").unwrap();
    let sg = Synguard::start(
        &lab.server,
        &[
            "--mode",
            "cookie",
            "--deny",
            "198.18.0.0/24",
            "--allow-file",
            file.to_str().unwrap(),
        ],
    )
    .unwrap();
    assert!(get(), "allowed inside the denied /24");
    let m = sg.metrics().unwrap();
    assert!(decisions(&m, Reason::ListAllowed) >= 1.0);
    assert_eq!(cookies_sent(&m), 0.0, "allowed sources bypass cookies");
    sg.stop(Signal::SIGTERM).unwrap();
    let _ = std::fs::remove_file(&file);
}

/// Issue 16: forged ACKs behind IPv4 options or an IPv6 Destination Options header are judged
/// like any other: none reaches the kernel's cookie check, none makes a socket.
#[test]
fn forged_acks_behind_ip_options_and_extension_headers_never_reach_the_kernel() {
    let lab = Lab::new().unwrap();
    let (listener, sg) = stamped_listener(&lab, "[::]:8080");
    const N: u64 = 100_000;
    let failed_before = lab.server.netstat("TcpExtSyncookiesFailed").unwrap();
    let forged_before = decisions(&sg.metrics().unwrap(), Reason::AckForged);
    for shape in [
        SynShape::ForgedAckBehindIpv4Options,
        SynShape::ForgedAckBehindIpv6DestOptions,
    ] {
        let sent = syn_flood(&lab, 8080, N, None, shape, Duration::from_secs(30))
            .unwrap()
            .sent;
        assert_eq!(sent, N, "{shape:?}");
    }
    thread::sleep(Duration::from_millis(300));
    let m = metrics_once(&sg, Reason::AckForged, forged_before + (2 * N) as f64);
    assert_eq!(
        decisions(&m, Reason::AckForged) - forged_before,
        (2 * N) as f64
    );
    assert_eq!(
        lab.server.netstat("TcpExtSyncookiesFailed").unwrap(),
        failed_before,
        "the kernel checked none of them"
    );
    nothing_to_accept(&listener);
    sg.stop(Signal::SIGTERM).unwrap();
}

/// Issue 15, forged ACKs at scale: a million random ACKs from 32,768 spoofed sources to a
/// protected port in `cookie` mode make no socket, never reach the kernel's cookie check, and
/// are each counted as forged.
#[test]
fn a_million_forged_acks_make_no_socket_and_never_reach_the_kernel() {
    let lab = Lab::new().unwrap();
    let (listener, sg) = stamped_listener(&lab, "0.0.0.0:8080");
    const N: u64 = 1_000_000;
    let failed_before = lab.server.netstat("TcpExtSyncookiesFailed").unwrap();
    let forged_before = decisions(&sg.metrics().unwrap(), Reason::AckForged);
    let flood = syn_flood(
        &lab,
        8080,
        N,
        None,
        SynShape::ForgedAck,
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(flood.sent, N);
    eprintln!(
        "{N} forged ACKs in {:?} ({:.0} k/s)",
        flood.elapsed,
        flood.rate() / 1000.0
    );
    let m = metrics_once(&sg, Reason::AckForged, forged_before + N as f64);
    assert_eq!(decisions(&m, Reason::AckForged) - forged_before, N as f64);
    assert_eq!(
        lab.server.netstat("TcpExtSyncookiesFailed").unwrap(),
        failed_before,
        "the kernel checked none of them"
    );
    nothing_to_accept(&listener);
    sg.stop(Signal::SIGTERM).unwrap();
}
