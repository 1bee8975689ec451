//! Checks made before anything is loaded, so a run that cannot succeed changes nothing.

use caps::{CapSet, Capability};
use nix::net::if_::if_nametoindex;

use crate::Error;

/// Fails unless the process may load BPF programs and attach them to interfaces.
pub fn check_capabilities() -> Result<(), Error> {
    let has = |cap| caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false);
    let mut missing = Vec::new();
    // CAP_BPF appeared in Linux 5.8; before it, and still today, CAP_SYS_ADMIN also allows bpf().
    if !has(Capability::CAP_BPF) && !has(Capability::CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    // Without CAP_PERFMON the verifier treats the loader as unprivileged for pointer
    // arithmetic and speculation checks (bpf_allow_ptr_leaks(), bpf_bypass_spec_v1() in
    // include/linux/bpf.h) and rejects synguard's program with EACCES (measured:
    // tests/tests/deploy.rs).
    if !has(Capability::CAP_PERFMON) && !has(Capability::CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    if !has(Capability::CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    match missing.split_last() {
        None => Ok(()),
        Some((last, [])) => Err(Error::MissingCapabilities {
            missing: last.to_string(),
        }),
        Some((last, rest)) => Err(Error::MissingCapabilities {
            missing: format!("{} and {last}", rest.join(", ")),
        }),
    }
}

/// Resolves an interface name to its index in the current network namespace.
pub fn interface_index(iface: &str) -> Result<u32, Error> {
    if_nametoindex(iface).map_err(|_| Error::UnknownInterface {
        iface: iface.to_string(),
    })
}
