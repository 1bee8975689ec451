//! One synguard protecting two interfaces of a namespace: each gets its own program, control
//! socket and metrics; the namespace's sysctls are owned once, set while any interface needs
//! them and restored when the last one is detached.

use std::{net::SocketAddr, thread, time::Duration};

use nix::sys::signal::Signal;
use synguard_lab::{
    FLOOD_SOURCES, HttpServer, Lab, SynShape, Synguard, run_legit_clients, syn_flood_over,
};
use synguard_tests::{status, status_until, succeeded, synguard_cli};

const PORT: u16 = 80;
const SYNCOOKIES: &str = "net.ipv4.tcp_syncookies";

#[test]
fn one_daemon_protects_two_interfaces_and_owns_the_sysctls_once() {
    let mut lab = Lab::new().unwrap();
    let (server2, client2) = lab.add_link().unwrap();
    let _http = HttpServer::start(&lab.server, PORT).unwrap();
    lab.server.set_sysctl(SYNCOOKIES, "1").unwrap();
    let (first, second) = (lab.server.iface.clone(), server2.iface.clone());

    // Both interfaces in one daemon: `--iface` twice (Synguard::start gives the first).
    let sg = Synguard::start(&lab.server, &["--mode", "cookie", "--iface", &second]).unwrap();
    assert!(lab.server.xdp_attached().unwrap(), "first interface");
    assert!(server2.xdp_attached().unwrap(), "second interface");
    assert_eq!(lab.server.sysctl(SYNCOOKIES).unwrap(), "2");
    for iface in [&first, &second] {
        let s = status(iface);
        assert_eq!(
            (s["iface"].as_str(), s["mode"].as_str()),
            (Some(iface.as_str()), Some("cookie"))
        );
    }
    // Without --iface, the CLI cannot guess which one is meant.
    let out = synguard_cli(&["status"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("several interfaces are protected; choose one with --iface")
            && stderr.contains(&first)
            && stderr.contains(&second),
        "{stderr}"
    );

    // A flood over the second link, with legitimate clients on both: each interface's own
    // program answers what arrives on it, and each is counted under its own label.
    let answered = |iface: &str| {
        let m = sg.metrics().unwrap();
        synguard_tests::COOKIE_REASONS
            .into_iter()
            .map(|r| {
                m.sum(
                    "synguard_decisions_total",
                    &[("interface", iface), ("reason", r.name())],
                )
            })
            .sum::<f64>()
    };
    let sources: Vec<[u8; 4]> = (0..FLOOD_SOURCES)
        .map(|i| [198, 18, 128 + (i >> 8) as u8, i as u8])
        .collect();
    let (legit1, legit2, flood) = thread::scope(|scope| {
        let flood = scope.spawn(|| {
            syn_flood_over(
                (&server2, &client2),
                &sources,
                PORT,
                100_000,
                Some(50_000),
                SynShape::Bare,
                Duration::from_secs(10),
            )
            .unwrap()
        });
        thread::sleep(Duration::from_millis(300));
        let to = |ns: &synguard_lab::Netns| SocketAddr::from((ns.ipv4, PORT));
        let (client1, target1) = (&lab.client, to(&lab.server));
        let legit1 = scope.spawn(move || {
            run_legit_clients(
                client1,
                target1,
                100,
                Duration::from_millis(10),
                Duration::from_secs(1),
            )
            .unwrap()
        });
        let legit2 = run_legit_clients(
            &client2,
            to(&server2),
            100,
            Duration::from_millis(10),
            Duration::from_secs(1),
        )
        .unwrap();
        (legit1.join().unwrap(), legit2, flood.join().unwrap())
    });
    assert_eq!(flood.sent, 100_000);
    assert_eq!(legit1.succeeded, 100, "{:?}", legit1.first_error);
    assert_eq!(legit2.succeeded, 100, "{:?}", legit2.first_error);
    let (on_first, on_second) = (answered(&first), answered(&second));
    assert!(
        on_second >= 100_000.0,
        "the second interface answered {on_second} SYNs of a 100,000 SYN flood"
    );
    assert!(
        (100.0..1_000.0).contains(&on_first),
        "the first interface answered {on_first}: its legit clients' SYNs, not the flood"
    );

    // Detaching one interface leaves the other protected, and the sysctls with it.
    succeeded(&synguard_cli(&["detach", "--iface", &first]));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while lab.server.xdp_attached().unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "first interface still attached"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        server2.xdp_attached().unwrap(),
        "second interface detached too"
    );
    assert_eq!(lab.server.sysctl(SYNCOOKIES).unwrap(), "2");
    assert_eq!(status(&second)["mode"], "cookie");

    // The last one gone, the sysctls come back.
    let out = sg.stop(Signal::SIGTERM).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!server2.xdp_attached().unwrap());
    assert_eq!(lab.server.sysctl(SYNCOOKIES).unwrap(), "1");
}

#[test]
fn an_interface_named_twice_or_missing_is_refused_and_nothing_is_attached() {
    let mut lab = Lab::new().unwrap();
    let (server2, _client2) = lab.add_link().unwrap();
    let first = lab.server.iface.clone();
    for (extra, needle) in [
        (
            vec!["--iface", first.as_str()],
            format!("interface '{first}' is named twice"),
        ),
        (vec!["--iface", "sg-missing0"], "sg-missing0".to_string()),
    ] {
        let mut args = vec!["--mode", "cookie", "--iface", server2.iface.as_str()];
        args.extend(extra);
        let err = match Synguard::start(&lab.server, &args) {
            Ok(_) => panic!("started with {args:?}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(&needle), "{needle:?} missing: {err}");
        assert!(!lab.server.xdp_attached().unwrap());
        assert!(!server2.xdp_attached().unwrap());
    }
}

#[test]
fn a_handover_of_two_interfaces_is_taken_over_whole() {
    let mut lab = Lab::new().unwrap();
    let (server2, _client2) = lab.add_link().unwrap();
    lab.server.set_sysctl(SYNCOOKIES, "1").unwrap();
    let args = ["--mode", "cookie", "--iface", server2.iface.as_str()];
    let sg = Synguard::start(&lab.server, &args).unwrap();
    // SIGQUIT: both programs stay attached and the sysctls in force, for the next start.
    assert!(sg.stop(Signal::SIGQUIT).unwrap().status.success());
    assert!(lab.server.xdp_attached().unwrap() && server2.xdp_attached().unwrap());
    assert_eq!(lab.server.sysctl(SYNCOOKIES).unwrap(), "2");

    let sg = Synguard::start(&lab.server, &args).unwrap();
    let log = sg.log();
    for iface in [&lab.server.iface, &server2.iface] {
        assert!(
            log.lines()
                .any(|l| l.contains("took over the program") && l.contains(iface.as_str())),
            "{iface} not taken over: {log}"
        );
    }
    assert!(sg.stop(Signal::SIGTERM).unwrap().status.success());
    assert!(!lab.server.xdp_attached().unwrap() && !server2.xdp_attached().unwrap());
    assert_eq!(
        lab.server.sysctl(SYNCOOKIES).unwrap(),
        "1",
        "restored by the run that took over"
    );
}

/// `[interface.NAME]` tables: each interface takes the file's settings with its own table over
/// them, at start and at every reload (here, the file watch); a table for an interface
/// synguard does not protect stops a start and is refused at a reload.
#[test]
fn each_interface_takes_its_own_table_of_the_config_file() {
    let mut lab = Lab::new().unwrap();
    let (server2, _client2) = lab.add_link().unwrap();
    let _http = HttpServer::start(&lab.server, PORT).unwrap();
    let (first, second) = (lab.server.iface.clone(), server2.iface.clone());
    let dir = std::env::temp_dir().join(format!("{}-per-iface", lab.server.name));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("synguard.toml");
    let path = file.to_str().unwrap().to_string();
    let write = |text: &str| {
        // Through a rename, as editors save: the watch sees one change.
        let tmp = dir.join("synguard.toml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    let base = format!(
        "mode = \"monitor\"\n\n[interface.{second}]\nmode = \"cookie\"\n\
         syn-rate-per-source = 200\ndeny = [\"198.18.250.0/24\"]\n"
    );
    write(&base);

    // A table for an interface that is not protected: the start stops, nothing attached.
    let bin = synguard_lab::synguard_bin().unwrap();
    let mut cmd = lab.server.command(bin.to_str().unwrap());
    cmd.env("SYNGUARD_BPFFS", synguard_lab::LAB_BPFFS)
        .args(["run", "--config", &path, "--iface", &first]);
    let out = synguard_lab::run_bounded(&mut cmd, Duration::from_secs(10)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("[interface.{second}] names an interface")),
        "{stderr}"
    );
    assert!(!lab.server.xdp_attached().unwrap());

    let sg = Synguard::start(&lab.server, &["--config", &path, "--iface", &second]).unwrap();
    let (s1, s2) = (status(&first), status(&second));
    assert_eq!(
        (
            s1["mode"].as_str(),
            s1["limits"]["syn_rate_per_source"].as_u64()
        ),
        (Some("monitor"), Some(0))
    );
    assert_eq!(
        (
            s2["mode"].as_str(),
            s2["limits"]["syn_rate_per_source"].as_u64()
        ),
        (Some("cookie"), Some(200))
    );
    assert_eq!(
        (s1["lists"]["deny"].as_u64(), s2["lists"]["deny"].as_u64()),
        (Some(0), Some(1))
    );
    let m = sg.metrics().unwrap();
    assert_eq!(
        m.sum(
            "synguard_mode",
            &[("interface", &first), ("mode", "monitor")]
        ),
        1.0
    );
    assert_eq!(
        m.sum(
            "synguard_mode",
            &[("interface", &second), ("mode", "cookie")]
        ),
        1.0
    );
    // The namespace's sysctls, once for both: the cookie-mode interface needs cookies.
    assert_eq!(lab.server.sysctl(SYNCOOKIES).unwrap(), "2");

    // An edit gives the first interface a table of its own; the second keeps its table.
    write(&format!(
        "{base}\n[interface.{first}]\nmode = \"auto\"\nauto-threshold = 5000\n"
    ));
    let edited = std::time::Instant::now();
    let s1 = status_until(&first, |s| s["mode"] == "auto");
    assert!(
        edited.elapsed() < Duration::from_secs(2),
        "applied after {:?}",
        edited.elapsed()
    );
    assert_eq!(s1["mode"], "auto", "{}", sg.log());
    assert_eq!(s1["auto"]["threshold"], "5000");
    let s2 = status(&second);
    assert_eq!(
        (s2["mode"].as_str(), s2["lists"]["deny"].as_u64()),
        (Some("cookie"), Some(1))
    );

    // A table for an unknown interface at a reload: refused, and both keep what they had.
    write(&format!("{base}\n[interface.eth9]\nmode = \"off\"\n"));
    thread::sleep(Duration::from_millis(1500));
    let log = sg.log();
    assert!(
        log.contains("configuration reload refused")
            && log.contains("[interface.eth9] names an interface"),
        "{log}"
    );
    assert_eq!(status(&first)["mode"], "auto");
    assert_eq!(status(&second)["mode"], "cookie");

    // Run-time changes stay per interface too.
    succeeded(&synguard_cli(&["set", "--iface", &second, "mode=monitor"]));
    assert_eq!(status(&second)["mode"], "monitor");
    assert_eq!(status(&first)["mode"], "auto");
    sg.stop(Signal::SIGTERM).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
