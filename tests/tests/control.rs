//! The control API and its CLI verbs, end to end, against a running synguard while a spoofed
//! flood is in progress: every change applies from the next packet on, and legitimate
//! clients, running all along, lose nothing.

use std::{net::SocketAddr, process::Output, thread, time::Duration};

use serde_json::Value;
use synguard_common::Reason;
use synguard_lab::{
    HttpServer, Lab, SynShape, Synguard, run_bounded, run_legit_clients, syn_flood, synguard_bin,
};
use synguard_tests::{status, status_until, succeeded, synguard_cli};

const PORT: u16 = 80;

fn verb(iface: &str, args: &[&str]) -> Output {
    synguard_cli(&[args, &["--iface", iface]].concat())
}

/// A refused verb: exit 1 and one `synguard: error:` line containing `needle`.
fn refused(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("synguard: error: ") && stderr.contains(needle),
        "{needle:?} missing: {stderr}"
    );
}

#[test]
fn every_verb_works_on_a_running_daemon_during_a_flood() {
    let lab = Lab::new().unwrap();
    let _http = HttpServer::start(&lab.server, PORT).unwrap();
    let sg = Synguard::start(&lab.server, &["--mode", "monitor"]).unwrap();
    let iface = lab.server.iface.clone();
    let target: SocketAddr = (lab.server.ipv4, PORT).into();
    let decisions = |reason: Reason| {
        sg.metrics()
            .unwrap()
            .sum("synguard_decisions_total", &[("reason", reason.name())])
    };

    let s = status(&iface);
    assert_eq!(s["mode"], "monitor");
    assert_eq!(s["iface"], iface.as_str());
    assert_eq!(s["lists"]["allow"], 0);
    let text = succeeded(&verb(&iface, &["status"]));
    assert!(text.contains("mode        monitor"), "{text}");

    thread::scope(|scope| {
        let flood = scope.spawn(|| {
            syn_flood(
                &lab,
                PORT,
                50_000 * 8,
                Some(50_000),
                SynShape::Bare,
                Duration::from_secs(30),
            )
            .unwrap()
        });
        thread::sleep(Duration::from_millis(300));

        // Monitor -> cookie: answered from XDP from now on, and the sysctl follows.
        let answered = || {
            synguard_tests::COOKIE_REASONS
                .into_iter()
                .map(decisions)
                .sum::<f64>()
        };
        let before = answered();
        succeeded(&verb(&iface, &["set", "mode=cookie"]));
        assert_eq!(status(&iface)["mode"], "cookie");
        assert_eq!(lab.server.sysctl("net.ipv4.tcp_syncookies").unwrap(), "2");
        thread::sleep(Duration::from_millis(200));
        assert!(answered() > before + 1_000.0);

        // Legit clients from here on, every other change made while they run. (Before, in
        // monitor mode, the flood reaches the kernel, which protects nobody.)
        let legit = scope.spawn(|| {
            run_legit_clients(
                &lab.client,
                target,
                1_000,
                Duration::from_millis(5),
                Duration::from_secs(1),
            )
            .unwrap()
        });

        // The live view: SYNs answered per second, about the flood's rate.
        let top = succeeded(&verb(&iface, &["top", "--count", "1"]));
        let answered: f64 = top
            .lines()
            .find_map(|l| l.strip_prefix("syn tx"))
            .and_then(|rest| rest.trim().parse().ok())
            .unwrap_or_else(|| panic!("no 'syn tx' line: {top}"));
        assert!(
            (35_000.0..=70_000.0).contains(&answered),
            "{answered} SYN-ACKs/s for a 50k/s flood: {top}"
        );

        // Limits and thresholds.
        succeeded(&verb(
            &iface,
            &[
                "set",
                "syn-rate-per-source=500",
                "syn_burst_per_source=50",
                "max-synack-rate=200000",
                "auto-threshold=8x",
            ],
        ));
        let s = status(&iface);
        assert_eq!(s["limits"]["syn_rate_per_source"], 500);
        assert_eq!(s["limits"]["syn_burst_per_source"], 50);
        assert_eq!(s["limits"]["max_synack_rate"], 200_000);
        assert_eq!(s["auto"]["threshold"], "8x");

        // Deny the flood's range: its SYNs are dropped from the next packet on; the legit
        // client (198.18.0.2) is not in it.
        let before = decisions(Reason::ListDenied);
        succeeded(&verb(&iface, &["deny", "add", "198.18.128.0/17"]));
        thread::sleep(Duration::from_millis(200));
        assert!(decisions(Reason::ListDenied) > before + 1_000.0);
        succeeded(&verb(
            &iface,
            &["allow", "add", "198.18.0.2/32", "fd00:198:18::2/128"],
        ));
        assert_eq!(
            succeeded(&verb(&iface, &["allow", "list"]))
                .lines()
                .collect::<Vec<_>>(),
            ["198.18.0.2/32", "fd00:198:18::2/128"]
        );
        assert_eq!(status(&iface)["lists"]["deny"], 1);
        succeeded(&verb(&iface, &["deny", "del", "198.18.128.0/17"]));
        succeeded(&verb(&iface, &["allow", "del", "fd00:198:18::2/128"]));
        assert_eq!(
            succeeded(&verb(&iface, &["allow", "list"])).trim(),
            "198.18.0.2/32"
        );

        // Refused whole, each with its reason, and nothing changed.
        let before = status(&iface);
        refused(
            &verb(&iface, &["set", "colour=blue"]),
            "unknown or fixed key 'colour'",
        );
        refused(
            &verb(&iface, &["set", "iface=eth9"]),
            "unknown or fixed key 'iface'",
        );
        refused(
            &verb(&iface, &["set", "mode=off", "source-prefix-v4=33"]),
            "33",
        );
        refused(&verb(&iface, &["set", "mode=fast"]), "'fast' is not a mode");
        refused(
            &verb(&iface, &["deny", "add", "198.18.0.2/32"]),
            "on the allow list",
        );
        refused(
            &verb(&iface, &["allow", "del", "192.0.2.0/24"]),
            "not on the allow list",
        );
        let bad_cidr = verb(&iface, &["deny", "add", "198.18.0.1/16"]);
        assert_eq!(
            bad_cidr.status.code(),
            Some(2),
            "a malformed CIDR is a usage error"
        );
        let after = status(&iface);
        for key in ["mode", "limits", "lists", "auto"] {
            assert_eq!(
                before[key], after[key],
                "{key} changed by a refused request"
            );
        }

        let legit = legit.join().unwrap();
        let flood = flood.join().unwrap();
        // A cap four times the flood binds nothing, whichever CPU a SYN arrives on (a CPU
        // idle for one 10 ms window once got no budget for the next).
        assert_eq!(decisions(Reason::SynAckCapped), 0.0, "capped under the cap");
        assert!(flood.rate() >= 40_000.0, "{flood:?}");
        assert_eq!(
            legit.succeeded,
            legit.attempted,
            "legit requests during the changes: {:?}; capped {}, limited {}",
            legit.first_error,
            decisions(Reason::SynAckCapped),
            decisions(Reason::SynSourceLimited)
        );
    });

    let m = sg.metrics().unwrap();
    let event = |name: &str| m.sum("synguard_events_total", &[("event", name)]);
    assert_eq!(event("mode_changed"), 1.0, "monitor -> cookie");
    assert_eq!(event("config_changed"), 2.0, "two accepted sets");

    // Detach: the daemon exits, the interface is clean, the sysctls are back.
    succeeded(&verb(&iface, &["detach"]));
    let out = sg.wait(Duration::from_secs(10)).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!lab.server.xdp_attached().unwrap());
    refused(&verb(&iface, &["status"]), "no synguard is running");
}

#[test]
fn the_control_socket_is_for_root_and_its_group() {
    let lab = Lab::new().unwrap();
    let sg = Synguard::start(&lab.server, &["--mode", "monitor", "--log-format", "json"]).unwrap();
    let socket = format!("/run/synguard/control-{}.sock", lab.server.iface);
    let mode = std::fs::metadata(&socket).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o660);
    // An unprivileged user cannot talk to it.
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(synguard_bin().unwrap())
        .args(["status", "--iface", &lab.server.iface]);
    let out = run_bounded(&mut cmd, Duration::from_secs(10)).unwrap();
    refused(&out, "permission denied");

    // With --log-format json, every log line is one JSON object, its fields kept: a change
    // made through the socket is an event with what changed.
    succeeded(&verb(&lab.server.iface, &["set", "mode=cookie"]));
    thread::sleep(Duration::from_millis(200));
    let log = sg.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let mode_change = lines
        .iter()
        .find(|l| l["fields"]["message"] == "mode changed")
        .unwrap_or_else(|| panic!("no mode change: {log}"));
    assert_eq!(
        (&mode_change["fields"]["from"], &mode_change["fields"]["to"]),
        (&Value::from("monitor"), &Value::from("cookie"))
    );
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
    sg.stop(nix::sys::signal::Signal::SIGTERM).unwrap();
}

#[test]
fn the_config_file_is_checked_loaded_and_reloaded_on_sighup() {
    use nix::sys::signal::Signal;

    let lab = Lab::new().unwrap();
    let iface = lab.server.iface.clone();
    let dir = std::env::temp_dir().join(format!("{}-config", lab.server.name));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("synguard.toml");
    let path = file.to_str().unwrap().to_string();
    let write = |text: &str| std::fs::write(&file, text).unwrap();

    // check-config: the first problem, exit 1; a good file, exit 0.
    write("mode = \"fast\"\n");
    let out = synguard_cli(&["check-config", &path]);
    refused(&out, "key 'mode': invalid value 'fast'");
    write(&format!(
        "# synguard\niface = \"{iface}\"\nmode = \"monitor\"\nallow = [\"198.18.0.9/32\"]\n"
    ));
    let out = succeeded(&synguard_cli(&["check-config", &path]));
    assert!(out.contains("OK, 3 settings"), "{out}");

    // A bad file stops a start before anything changes.
    std::fs::write(dir.join("bad.toml"), "colour = \"blue\"\n").unwrap();
    let bad = dir.join("bad.toml");
    let mut cmd = lab
        .server
        .command(synguard_bin().unwrap().to_str().unwrap());
    cmd.args(["run", "--config", bad.to_str().unwrap(), "--iface", &iface]);
    let out = run_bounded(&mut cmd, Duration::from_secs(10)).unwrap();
    refused(&out, "unknown key 'colour'");
    assert!(!lab.server.xdp_attached().unwrap());

    // Without the watch, so that only SIGHUP reloads (the watch has its own test below).
    let sg = Synguard::start(&lab.server, &["--config", &path, "--no-config-watch"]).unwrap();
    let s = status(&iface);
    assert_eq!(
        (s["mode"].as_str(), s["lists"]["allow"].as_u64()),
        (Some("monitor"), Some(1))
    );
    write(&format!("iface = \"{iface}\"\nmode = \"off\"\n"));
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        status(&iface)["mode"],
        "monitor",
        "no reload without SIGHUP"
    );

    // SIGHUP: the new file is in force.
    write(&format!(
        "iface = \"{iface}\"\nmode = \"cookie\"\nsyn-rate-per-source = 300\n\
         deny = [\"198.18.200.0/24\"]\n"
    ));
    sg.signal(Signal::SIGHUP).unwrap();
    let s = status_until(&iface, |s| s["mode"] == "cookie");
    assert_eq!(s["mode"], "cookie", "{}", sg.log());
    assert_eq!(s["limits"]["syn_rate_per_source"], 300);
    assert_eq!(
        (s["lists"]["allow"].as_u64(), s["lists"]["deny"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(lab.server.sysctl("net.ipv4.tcp_syncookies").unwrap(), "2");

    // A malformed file, or one that changes what needs a restart: refused whole, logged.
    for (text, reason) in [
        ("mode = ".to_string(), "malformed TOML"),
        (
            format!("iface = \"{iface}\"\nmode = \"off\"\nxdp-mode = \"skb\"\n"),
            "'xdp-mode' changed",
        ),
    ] {
        write(&text);
        sg.signal(Signal::SIGHUP).unwrap();
        thread::sleep(Duration::from_millis(300));
        let log = sg.log();
        assert!(
            log.contains("configuration reload refused") && log.contains(reason),
            "{reason}: {log}"
        );
        let s = status(&iface);
        assert_eq!(s["mode"], "cookie", "the running configuration stays");
        assert_eq!(s["lists"]["deny"], 1);
    }
    let m = sg.metrics().unwrap();
    let event = |name: &str| m.sum("synguard_events_total", &[("event", name)]);
    assert_eq!(
        (event("config_changed"), event("config_refused")),
        (1.0, 2.0)
    );
    sg.stop(Signal::SIGTERM).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A mounted ConfigMap, updated the way the kubelet does it: the config file is a symlink
/// through `..data`, and an update is a new timestamped directory that a `..data_tmp` symlink,
/// renamed over `..data`, puts in force in one step (kubernetes
/// pkg/volume/util/atomic_writer.go). synguard sees each swap without a signal.
#[test]
fn a_configmap_swap_reloads_within_two_seconds_and_a_bad_one_is_refused() {
    use std::os::unix::fs::symlink;

    let lab = Lab::new().unwrap();
    let iface = lab.server.iface.clone();
    let dir = std::env::temp_dir().join(format!("{}-configmap", lab.server.name));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut version = 0;
    let mut swap = |text: &str| {
        version += 1;
        let data = format!("..2026_12_02_15_00_0{version}.{}", 100 + version);
        std::fs::create_dir_all(dir.join(&data)).unwrap();
        std::fs::write(dir.join(&data).join("synguard.toml"), text).unwrap();
        let _ = std::fs::remove_file(dir.join("..data_tmp"));
        symlink(&data, dir.join("..data_tmp")).unwrap();
        let old = std::fs::read_link(dir.join("..data")).ok();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        if let Some(old) = old {
            std::fs::remove_dir_all(dir.join(old)).unwrap();
        }
        std::time::Instant::now()
    };
    swap(&format!("iface = \"{iface}\"\nmode = \"monitor\"\n"));
    symlink("..data/synguard.toml", dir.join("synguard.toml")).unwrap();
    let path = dir.join("synguard.toml");
    let sg = Synguard::start(&lab.server, &["--config", path.to_str().unwrap()]).unwrap();
    assert_eq!(status(&iface)["mode"], "monitor");

    // A good update: in force within 2 s.
    let swapped = swap(&format!(
        "iface = \"{iface}\"\nmode = \"cookie\"\ndeny = [\"198.18.200.0/24\"]\n"
    ));
    let s = status_until(&iface, |s| s["mode"] == "cookie");
    let took = swapped.elapsed();
    assert_eq!(s["mode"], "cookie", "{}", sg.log());
    eprintln!("the ConfigMap swap applied after {took:?}");
    assert!(took < Duration::from_secs(2), "applied after {took:?}");
    assert_eq!(s["lists"]["deny"], 1);

    // A bad one: refused, logged and counted; the running configuration stays.
    swap(&format!("iface = \"{iface}\"\nmode = \"fast\"\n"));
    thread::sleep(Duration::from_millis(1500));
    let log = sg.log();
    assert!(
        log.contains("configuration reload refused") && log.contains("invalid value 'fast'"),
        "{log}"
    );
    let s = status(&iface);
    assert_eq!(
        (s["mode"].as_str(), s["lists"]["deny"].as_u64()),
        (Some("cookie"), Some(1))
    );

    // And the next good one still applies.
    swap(&format!("iface = \"{iface}\"\nmode = \"auto\"\n"));
    let s = status_until(&iface, |s| s["mode"] == "auto");
    assert_eq!(s["mode"], "auto", "{}", sg.log());
    let m = sg.metrics().unwrap();
    let event = |name: &str| m.sum("synguard_events_total", &[("event", name)]);
    assert_eq!(
        (event("config_changed"), event("config_refused")),
        (2.0, 1.0),
        "each swap read once"
    );
    sg.stop(nix::sys::signal::Signal::SIGTERM).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
