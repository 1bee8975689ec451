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
    if !has(Capability::CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::MissingCapabilities {
            missing: missing.join(" and "),
        })
    }
}

/// Resolves an interface name to its index in the current network namespace.
pub fn interface_index(iface: &str) -> Result<u32, Error> {
    if_nametoindex(iface).map_err(|_| Error::UnknownInterface {
        iface: iface.to_string(),
    })
}
