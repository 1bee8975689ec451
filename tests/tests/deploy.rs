//! The deployment files in `deploy/`: the systemd unit is accepted by systemd, and the
//! capabilities it grants are enough for synguard to run and protect.

use std::{net::SocketAddr, path::PathBuf, process::Command, time::Duration};

use nix::sys::signal::Signal;
use synguard_lab::{HttpServer, Lab, Synguard, run_legit_clients, synguard_bin};
use synguard_tests::{succeeded, synguard_cli};

fn unit_text() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/synguard.service");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The capability names in the unit's `CapabilityBoundingSet=`, as setpriv spells them.
fn unit_capabilities() -> Vec<String> {
    let text = unit_text();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets a bounding set");
    line.split_whitespace()
        .map(|cap| cap.trim_start_matches("CAP_").to_lowercase())
        .collect()
}

#[test]
fn systemd_accepts_the_unit() {
    // verify checks that ExecStart exists: point it at the binary under test.
    let unit = unit_text().replace(
        "/usr/local/sbin/synguard",
        synguard_bin().unwrap().to_str().unwrap(),
    );
    let dir = std::env::temp_dir().join(format!("synguard-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("synguard.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd; `cargo xtask setup` installs it)");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

#[test]
fn the_units_capabilities_are_enough() {
    let caps = unit_capabilities();
    assert!(caps.contains(&"bpf".to_string()) && caps.contains(&"net_admin".to_string()));
    let set = format!(
        "-all,{}",
        caps.iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let lab = Lab::new().unwrap();
    let _http = HttpServer::start(&lab.server, 80).unwrap();
    // Root, with only the unit's capabilities: bounding, inheritable and ambient sets.
    let wrapper = [
        "setpriv".to_string(),
        format!("--bounding-set={set}"),
        format!("--inh-caps={set}"),
        format!("--ambient-caps={set}"),
    ];
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let sg = Synguard::start_with(&lab.server, &wrapper, &["--mode", "cookie"]).unwrap();
    let target: SocketAddr = (lab.server.ipv4, 80).into();
    let clients = run_legit_clients(
        &lab.client,
        target,
        20,
        Duration::from_millis(5),
        Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!(clients.succeeded, 20);
    let m = sg.metrics().unwrap();
    assert!(
        m.sum(
            "synguard_decisions_total",
            &[("reason", "ack_cookie_valid")]
        ) >= 20.0,
        "connections came through cookies: {}",
        sg.log()
    );
    // The fast path's tracing program attaches with these capabilities too (it is on once
    // the first rebuild of the owner filter is done, well within 3 s).
    let on = (0..30).any(|_| {
        let on = sg
            .metrics()
            .is_ok_and(|m| m.sum("synguard_fast_path", &[]) == 1.0);
        if !on {
            std::thread::sleep(Duration::from_millis(100));
        }
        on
    });
    assert!(on, "the fast path is on: {}", sg.log());
    let out = sg.stop(Signal::SIGTERM).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!lab.server.xdp_attached().unwrap());
}

#[test]
fn the_default_config_file_passes_check_config() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/synguard.toml");
    let out = Command::new(synguard_bin().unwrap())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The DaemonSet asks for what synguard needs, and the same capabilities as the unit; its
/// ConfigMap is a valid config, mounted where synguard reads it, whole (so that the kubelet's
/// updates reach the watched file).
#[test]
fn the_daemonset_matches_what_synguard_needs() {
    use serde::Deserialize;

    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/daemonset.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let docs: Vec<serde_norway::Value> = serde_norway::Deserializer::from_str(&text)
        .map(|doc| serde_norway::Value::deserialize(doc).unwrap())
        .collect();
    let kind = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(kind))
            .unwrap_or_else(|| panic!("no {kind} in {}", path.display()))
    };
    let doc = kind("DaemonSet");
    let config_map = kind("ConfigMap");
    let config =
        std::env::temp_dir().join(format!("synguard-configmap-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        config_map["data"]["synguard.toml"].as_str().unwrap(),
    )
    .unwrap();
    let checked = synguard_cli(&["check-config", config.to_str().unwrap()]);
    let _ = std::fs::remove_file(&config);
    assert!(succeeded(&checked).contains("OK"));
    let pod = &doc["spec"]["template"];
    assert_eq!(pod["spec"]["hostNetwork"].as_bool(), Some(true));
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/scrape"].as_str(),
        Some("true")
    );
    let container = &pod["spec"]["containers"][0];
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    let mut added: Vec<String> = container["securityContext"]["capabilities"]["add"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_lowercase())
        .collect();
    let mut unit = unit_capabilities();
    added.sort();
    unit.sort();
    assert_eq!(
        added, unit,
        "the same capabilities as deploy/synguard.service"
    );
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    assert!(mounts.contains(&"/sys/fs/bpf"), "{mounts:?}");
    assert!(mounts.contains(&"/run/synguard"), "{mounts:?}");
    let config_mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"].as_str() == Some("/etc/synguard"))
        .expect("the ConfigMap mounted where synguard reads its config");
    assert!(
        config_mount["subPath"].is_null(),
        "a subPath mount is never updated"
    );
    let volume = pod["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == config_mount["name"])
        .unwrap();
    assert_eq!(volume["configMap"]["name"], config_map["metadata"]["name"]);
    let env = container["env"].as_sequence().map_or(0, Vec::len);
    assert_eq!(env, 0, "environment variables would win over the ConfigMap");
}

/// The Grafana dashboard takes its datasource as an input (nothing hard-coded), and shows what
/// an operator needs during an attack. (That its queries run and find data is checked against
/// a real Prometheus in prometheus.rs.)
#[test]
fn the_grafana_dashboard_is_importable_anywhere() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/synguard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    let panels = dashboard["panels"].as_array().unwrap();
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Attack state",
        "SYNs by action",
        "Cookie validation",
        "Drops by reason",
        "Handshake completion by port",
        "Health",
    ] {
        assert!(titles.contains(&wanted), "no {wanted:?} panel: {titles:?}");
    }
    for panel in panels {
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{}",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}");
        }
    }
}
