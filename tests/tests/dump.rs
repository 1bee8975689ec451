//! `synguard dump` during a flood, read back by tcpdump and tshark (not by our own parser):
//! the SYNs and the SYN-ACKs sent from XDP are there, each SYN with its verdict (XDP_TX) and
//! reason; the filters keep only what they name; bad filters are refused; the output can be a
//! pipe, and a reader that goes away ends the dump cleanly.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use synguard_lab::{
    HttpServer, Lab, SynShape, Synguard, run_bounded, run_legit_clients, syn_flood,
};
use synguard_tests::{succeeded, synguard_cli};

const PORT: u16 = 80;

/// Runs `program args`, bounded, and returns its stdout; its stderr in the panic if it failed.
fn tool(program: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args);
    succeeded(&run_bounded(&mut cmd, Duration::from_secs(60)).unwrap())
}

/// tshark's fields of every frame of `file`, tab-separated.
fn tshark(file: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut args = vec![
        "-r",
        file.to_str().unwrap(),
        "-T",
        "fields",
        "-E",
        "separator=\t",
    ];
    for field in fields {
        args.extend(["-e", field]);
    }
    tool("tshark", &args)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[test]
fn a_dump_during_a_flood_shows_each_syn_its_verdict_and_the_synack_sent() {
    let lab = Lab::new().unwrap();
    let _http = HttpServer::start(&lab.server, PORT).unwrap();
    let sg = Synguard::start(&lab.server, &["--mode", "cookie"]).unwrap();
    let iface = lab.server.iface.clone();
    let dir = std::env::temp_dir().join(format!("{}-dump", lab.server.name));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("flood.pcapng");

    let dumped = thread::scope(|scope| {
        let flood = scope.spawn(|| {
            syn_flood(
                &lab,
                PORT,
                400_000,
                Some(100_000),
                SynShape::Bare,
                Duration::from_secs(30),
            )
            .unwrap()
        });
        thread::sleep(Duration::from_millis(300));
        let started = std::time::Instant::now();
        let out = synguard_cli(&[
            "dump",
            "--iface",
            &iface,
            "-c",
            "1000",
            "-w",
            file.to_str().unwrap(),
        ]);
        let took = started.elapsed();
        let report = flood.join().unwrap();
        assert!(report.rate() >= 90_000.0, "flood too slow: {report:?}");
        (out, took)
    });
    let (out, took) = dumped;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("1000 packets captured"), "{stderr}");
    assert!(
        took < Duration::from_secs(3),
        "1000 packets at 100 k/s took {took:?}"
    );

    // tcpdump lists the SYNs and the SYN-ACKs sent.
    let listing = tool("tcpdump", &["-nr", file.to_str().unwrap()]);
    let syns = listing.lines().filter(|l| l.contains("Flags [S],")).count();
    let synacks = listing
        .lines()
        .filter(|l| l.contains("Flags [S.],"))
        .count();
    assert_eq!(syns, 1000, "{}", &listing[..listing.len().min(2000)]);
    assert_eq!(synacks, 1000, "each SYN answered, with its SYN-ACK");

    // tshark, for what tcpdump does not print: verdict, direction, comment, interface.
    let frames = tshark(
        &file,
        &[
            "frame.verdict.ebpf_xdp",
            "frame.packet_flags_direction",
            "frame.comment",
            "frame.interface_name",
            "tcp.flags.str",
        ],
    );
    assert_eq!(frames.len(), 2000);
    for pair in frames.chunks(2) {
        let (syn, synack) = (&pair[0], &pair[1]);
        assert_eq!(syn[0], "3", "XDP_TX is 3: {syn:?}");
        assert_eq!(syn[1], "0x00000001", "inbound: {syn:?}");
        assert!(
            syn[2].contains("tx (XDP_TX), reason cookie_sent") && syn[2].contains("class syn"),
            "{syn:?}"
        );
        assert_eq!(syn[3], iface);
        assert_eq!(synack[1], "0x00000002", "outbound: {synack:?}");
        assert!(synack[2].contains("the reply sent from XDP"), "{synack:?}");
        assert!(
            synack[4].contains('S') && synack[4].contains('A'),
            "{synack:?}"
        );
    }
    sg.stop(nix::sys::signal::Signal::SIGTERM).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn filters_keep_only_what_they_name_and_bad_ones_are_refused() {
    let lab = Lab::new().unwrap();
    let _http = HttpServer::start(&lab.server, PORT).unwrap();
    let sg = Synguard::start(&lab.server, &["--mode", "cookie"]).unwrap();
    let iface = lab.server.iface.clone();
    let target: SocketAddr = (lab.server.ipv4, PORT).into();
    let dir = std::env::temp_dir().join(format!("{}-dump-filters", lab.server.name));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("acks.pcapng");

    // Only the legit client's valid cookie ACKs, while a spoofed flood runs alongside.
    thread::scope(|scope| {
        let flood = scope.spawn(|| {
            syn_flood(
                &lab,
                PORT,
                100_000,
                Some(50_000),
                SynShape::Bare,
                Duration::from_secs(30),
            )
            .unwrap()
        });
        let clients = scope.spawn(|| {
            thread::sleep(Duration::from_millis(300));
            run_legit_clients(
                &lab.client,
                target,
                40,
                Duration::from_millis(20),
                Duration::from_secs(1),
            )
            .unwrap()
        });
        let out = synguard_cli(&[
            "dump",
            "--iface",
            &iface,
            "--class",
            "ack",
            "--reason",
            "ack_cookie_valid",
            "--port",
            "80",
            "--source",
            &format!("{}/32", lab.client.ipv4),
            "-c",
            "20",
            "--duration",
            "10",
            "-w",
            file.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(clients.join().unwrap().succeeded, 40);
        flood.join().unwrap();
    });
    let frames = tshark(
        &file,
        &["ip.src", "tcp.dstport", "tcp.flags.str", "frame.comment"],
    );
    assert_eq!(frames.len(), 20, "{frames:?}");
    for frame in &frames {
        assert_eq!(frame[0], lab.client.ipv4.to_string(), "{frame:?}");
        assert_eq!(frame[1], "80");
        assert!(frame[3].contains("reason ack_cookie_valid"), "{frame:?}");
        assert!(frame[3].contains("class ack"), "{frame:?}");
    }

    // Bad filters: exit 1, the known values named, and no capture started.
    for (args, needle) in [
        (
            &["--class", "syns"][..],
            "unknown class 'syns'; known: non_ip",
        ),
        (&["--reason", "forged"], "unknown reason 'forged'"),
        (&["--rate", "0"], "--rate must be at least 1"),
    ] {
        let mut all = vec!["dump", "--iface", &iface, "-w", "/dev/null"];
        all.extend_from_slice(args);
        let out = synguard_cli(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    sg.stop(nix::sys::signal::Signal::SIGTERM).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `synguard dump -w - | tcpdump -r -`, and a reader that stops early (`head`): the dump ends
/// cleanly, turning the capture off, and a second dump can start at once.
#[test]
fn the_dump_streams_to_a_pipe_and_ends_when_its_reader_does() {
    let lab = Lab::new().unwrap();
    let _http = HttpServer::start(&lab.server, PORT).unwrap();
    let sg = Synguard::start(&lab.server, &["--mode", "cookie"]).unwrap();
    let iface = lab.server.iface.clone();
    let bin = synguard_lab::synguard_bin().unwrap();
    let pipeline = format!(
        "{} dump --iface {iface} -c 200 -w - | tcpdump -nr - 2>/dev/null | grep -c 'Flags \\[S'",
        bin.display()
    );
    let early_exit = format!(
        "{} dump --iface {iface} --duration 20 -w - | head -c 4096 >/dev/null",
        bin.display()
    );
    thread::scope(|scope| {
        let flood = scope.spawn(|| {
            syn_flood(
                &lab,
                PORT,
                400_000,
                Some(50_000),
                SynShape::Bare,
                Duration::from_secs(30),
            )
            .unwrap()
        });
        thread::sleep(Duration::from_millis(200));
        let mut sh = Command::new("sh");
        sh.args(["-c", &pipeline]).stderr(Stdio::inherit());
        let counted = succeeded(&run_bounded(&mut sh, Duration::from_secs(20)).unwrap());
        assert_eq!(counted.trim(), "400", "200 SYNs and their 200 SYN-ACKs");

        let started = std::time::Instant::now();
        let mut sh = Command::new("sh");
        sh.args(["-c", &early_exit]);
        let out = run_bounded(&mut sh, Duration::from_secs(20)).unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the dump ended with its reader, not at --duration"
        );
        // The capture is off again: a new dump is not refused as a second one.
        let out = synguard_cli(&["dump", "--iface", &iface, "-c", "10", "-w", "/dev/null"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        flood.join().unwrap();
    });
    sg.stop(nix::sys::signal::Signal::SIGTERM).unwrap();
}
