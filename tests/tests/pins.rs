//! Pins that cannot outlive the process: under `ip netns exec`, synguard runs in a mount
//! namespace of its own, with a fresh /sys. A BPF filesystem it mounts there is private to it
//! and goes when it does, pins and XDP program included. synguard must say so at start.

use nix::sys::signal::Signal;
use synguard_lab::{Lab, Synguard};

const WARNING: &str = "protection will not survive synguard's exit";

#[test]
fn a_private_bpf_filesystem_is_named_at_start_and_a_shared_one_is_not() {
    let lab = Lab::new().unwrap();
    // /sys/fs/bpf inside `ip netns exec`'s fresh sysfs: synguard mounts a BPF filesystem there,
    // in its own mount namespace only.
    let private =
        Synguard::start(&lab.server, &["--mode", "off", "--bpffs", "/sys/fs/bpf"]).unwrap();
    let log = private.log();
    assert!(
        log.contains(WARNING),
        "no warning for a private BPF filesystem:\n{log}"
    );
    assert!(
        log.contains("--bpffs"),
        "the warning says what to do:\n{log}"
    );
    private.stop(Signal::SIGTERM).unwrap();

    // The lab's own BPF filesystem is mounted in the host's namespace: pins there outlive
    // synguard, and nothing is said.
    let shared = Synguard::start(&lab.server, &["--mode", "off"]).unwrap();
    let log = shared.log();
    assert!(
        !log.contains(WARNING),
        "a warning for a shared BPF filesystem:\n{log}"
    );
    shared.stop(Signal::SIGTERM).unwrap();
}
