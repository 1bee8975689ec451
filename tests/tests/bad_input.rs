//! Each bad invocation of `synguard run` gets its own one-line, actionable error, a non-zero
//! exit, and leaves the interface exactly as it was.

use std::{net::TcpListener, process::Output, time::Duration};

use aya::{
    Ebpf,
    programs::{Xdp, XdpMode},
};
use synguard_lab::{Lab, Netns, run_bounded, synguard_bin};

/// Runs the real binary in `ns` (optionally through a wrapper such as setpriv) to completion.
fn synguard(ns: &Netns, wrapper: &[&str], args: &[&str]) -> Output {
    let bin = synguard_bin().unwrap();
    let mut cmd = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut cmd = ns.command(program);
            cmd.args(rest).arg(&bin);
            cmd
        }
        None => ns.command(bin.to_str().unwrap()),
    };
    cmd.args(args).env("SYNGUARD_CONFIG", "/dev/null");
    run_bounded(&mut cmd, Duration::from_secs(20)).unwrap()
}

/// Asserts a one-line `synguard: error:` message containing every one of `needles`, and
/// returns it.
fn assert_error(out: &Output, exit_code: i32, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(
        out.status.code(),
        Some(exit_code),
        "exit status; stderr: {stderr}"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("synguard: error: "),
        "error line: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line only: {stderr}");
    for needle in needles {
        assert!(last.contains(needle), "{needle:?} missing from: {last}");
    }
    last.to_string()
}

fn run_args<'a>(lab: &'a Lab, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--iface",
        &lab.server.iface,
        "--metrics-addr",
        "127.0.0.1:9477",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn unknown_interface() {
    let lab = Lab::new().unwrap();
    let out = synguard(&lab.server, &[], &["run", "--iface", "nosuch0"]);
    assert_error(&out, 1, &["'nosuch0' does not exist", "ip link show"]);
    assert!(!lab.server.xdp_attached().unwrap());
}

#[test]
fn missing_privileges() {
    let lab = Lab::new().unwrap();
    // An unprivileged user has neither capability.
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let out = synguard(&lab.server, &nobody, &run_args(&lab, &[]));
    assert_error(
        &out,
        1,
        &[
            "missing CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN",
            "run synguard as root",
        ],
    );
    // Root without CAP_NET_ADMIN is told about exactly that one.
    let no_net_admin = [
        "setpriv",
        "--inh-caps=-net_admin",
        "--bounding-set=-net_admin",
    ];
    let out = synguard(&lab.server, &no_net_admin, &run_args(&lab, &[]));
    let message = assert_error(&out, 1, &["missing CAP_NET_ADMIN:"]);
    assert!(!message.contains("missing CAP_BPF"), "{message}");
    assert!(!lab.server.xdp_attached().unwrap());
    // Without CAP_PERFMON (and CAP_SYS_ADMIN, which covers it) the verifier would refuse the
    // program with a bare EACCES; the check names the capability instead.
    let no_perfmon = [
        "setpriv",
        "--inh-caps=-perfmon,-sys_admin",
        "--bounding-set=-perfmon,-sys_admin",
    ];
    let out = synguard(&lab.server, &no_perfmon, &run_args(&lab, &[]));
    assert_error(&out, 1, &["missing CAP_PERFMON:", "AmbientCapabilities"]);
    assert!(!lab.server.xdp_attached().unwrap());
}

/// Attaches the lab's XDP_PASS program to the server's interface, as "someone else" would.
fn attach_foreign_program(ns: &Netns, mode: XdpMode) -> Ebpf {
    let mut ebpf = Ebpf::load(synguard::datapath::objects::LAB).unwrap();
    let program: &mut Xdp = ebpf.program_mut("lab_pass").unwrap().try_into().unwrap();
    program.load().unwrap();
    let iface = ns.iface.clone();
    ns.enter(move || program.attach(&iface, mode).map(|_| ()))
        .unwrap()
        .unwrap();
    ebpf
}

#[test]
fn another_program_already_attached() {
    let lab = Lab::new().unwrap();
    let timestamps = lab.server.sysctl("net.ipv4.tcp_timestamps").unwrap();
    for (theirs, ours) in [
        (XdpMode::Driver, "native"),
        // A generic-mode program blocks a native one too (EEXIST rather than EBUSY).
        (XdpMode::Skb, "native"),
        (XdpMode::Skb, "skb"),
    ] {
        let foreign = attach_foreign_program(&lab.server, theirs);
        let out = synguard(&lab.server, &[], &run_args(&lab, &["--xdp-mode", ours]));
        assert_error(
            &out,
            1,
            &[
                "another XDP program is already attached",
                &lab.server.iface,
                "xdp off",
            ],
        );
        let link = lab
            .server
            .exec("ip", &["link", "show", "dev", &lab.server.iface])
            .unwrap();
        assert!(
            link.contains("name lab_pass"),
            "the other program is untouched: {link}"
        );
        assert_eq!(
            lab.server.sysctl("net.ipv4.tcp_timestamps").unwrap(),
            timestamps,
            "no sysctl was touched"
        );
        drop(foreign);
        assert!(!lab.server.xdp_attached().unwrap());
    }
}

#[test]
fn metrics_port_in_use() {
    let lab = Lab::new().unwrap();
    let _taken = lab
        .server
        .enter(|| TcpListener::bind("127.0.0.1:9477"))
        .unwrap()
        .unwrap();
    let out = synguard(&lab.server, &[], &run_args(&lab, &[]));
    assert_error(
        &out,
        1,
        &["127.0.0.1:9477", "already in use", "--metrics-addr"],
    );
    assert!(
        !lab.server.xdp_attached().unwrap(),
        "nothing attached when metrics cannot start"
    );

    let out = synguard(
        &lab.server,
        &[],
        &[
            "run",
            "--iface",
            &lab.server.iface,
            "--metrics-addr",
            "192.0.2.1:9477",
        ],
    );
    assert_error(&out, 1, &["192.0.2.1:9477", "not assigned"]);
    assert!(!lab.server.xdp_attached().unwrap());
}

#[test]
fn native_mode_on_a_driver_without_xdp_support() {
    let lab = Lab::new().unwrap();
    // The loopback device has no native XDP (no ndo_bpf).
    let out = synguard(&lab.server, &[], &["run", "--iface", "lo"]);
    assert_error(
        &out,
        1,
        &["native XDP attach to lo failed", "--xdp-mode skb"],
    );
    let link = lab
        .server
        .exec("ip", &["link", "show", "dev", "lo"])
        .unwrap();
    assert!(!link.contains("prog/xdp"), "{link}");
}

#[test]
fn malformed_arguments_are_usage_errors() {
    let lab = Lab::new().unwrap();
    for (args, needle) in [
        (run_args(&lab, &["--xdp-mode", "hw"]), "invalid value 'hw'"),
        (
            vec!["run", "--iface", "x", "--metrics-addr", "9477"],
            "invalid socket address",
        ),
        (vec!["run"], "--iface <IFACE>"),
        (
            run_args(&lab, &["--deny", "198.18.0.1/16"]),
            "has host bits set; did you mean 198.18.0.0/16?",
        ),
        (run_args(&lab, &["--ports", "80,,443"]), "empty entry"),
    ] {
        let out = synguard(&lab.server, &[], &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    assert!(!lab.server.xdp_attached().unwrap());
}

#[test]
fn a_second_daemon_on_the_same_interface() {
    let lab = Lab::new().unwrap();
    let first = synguard_lab::Synguard::start(&lab.server, &["--mode", "cookie"]).unwrap();
    let program_before = lab
        .server
        .exec("ip", &["link", "show", "dev", &lab.server.iface])
        .unwrap();
    // Another metrics port, so the lock is what stops it.
    let mut args = vec!["run", "--iface", &lab.server.iface];
    args.extend(["--metrics-addr", "127.0.0.1:9478", "--mode", "off"]);
    let out = synguard(&lab.server, &[], &args);
    assert_error(
        &out,
        1,
        &["another synguard is already running on", &lab.server.iface],
    );
    let program_after = lab
        .server
        .exec("ip", &["link", "show", "dev", &lab.server.iface])
        .unwrap();
    assert_eq!(
        program_before, program_after,
        "the first one's program is untouched"
    );
    assert_eq!(
        first
            .metrics()
            .unwrap()
            .sum("synguard_mode", &[("mode", "cookie")]),
        1.0,
        "and so is its configuration"
    );
    first.stop(nix::sys::signal::Signal::SIGTERM).unwrap();
}

#[test]
fn a_second_daemon_in_the_same_network_namespace() {
    let lab = Lab::new().unwrap();
    let first = synguard_lab::Synguard::start(&lab.server, &["--mode", "cookie"]).unwrap();
    // Another interface of the same namespace: synguard owns the namespace's sysctls.
    let args = [
        "run",
        "--iface",
        "lo",
        "--xdp-mode",
        "skb",
        "--metrics-addr",
        "127.0.0.1:9478",
    ];
    let out = synguard(&lab.server, &[], &args);
    assert_error(
        &out,
        1,
        &[
            "another synguard already runs in this network namespace",
            &lab.server.iface,
        ],
    );
    let lo = lab
        .server
        .exec("ip", &["link", "show", "dev", "lo"])
        .unwrap();
    assert!(!lo.contains("xdp"), "nothing attached to lo: {lo}");
    assert_eq!(
        lab.server.sysctl("net.ipv4.tcp_syncookies").unwrap(),
        "2",
        "the first one's sysctls untouched"
    );
    first.stop(nix::sys::signal::Signal::SIGTERM).unwrap();
}
