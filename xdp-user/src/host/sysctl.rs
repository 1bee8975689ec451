//! The sysctls cookie mode needs, set in the interface's network namespace and put back
//! afterwards, even after a crash.
//!
//! - `net.ipv4.tcp_syncookies=2`: `bpf_tcp_gen_syncookie` issues cookies only then (or when
//!   the listener's SYN queue is full), and the kernel accepts cookie ACKs only when it is
//!   not 0 (cookie_v4_check, net/ipv4/syncookies.c).
//! - `net.ipv4.tcp_timestamps=2`: timestamps without the per-connection random offset. With
//!   1, the kernel subtracts an offset from the echoed timestamp before reading the options
//!   encoded in it, and its own later timestamps jump, so clients' PAWS checks drop data
//!   (docs/design.md). Applies to IPv6 too.
//!
//! Before changing anything, the previous values are written to a state file; a clean exit
//! restores them and removes it. If synguard dies without that, the next start finds the file
//! and treats its values, not the current ones, as the ones to restore.

use std::{
    collections::BTreeSet,
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use tracing::{info, warn};

use crate::{Error, host::state, sync::lock};

pub const SYNCOOKIES: &str = "net.ipv4.tcp_syncookies";
pub const TIMESTAMPS: &str = "net.ipv4.tcp_timestamps";

fn proc_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

/// Reads a sysctl of this process's network namespace.
pub fn read(key: &str) -> Result<String, Error> {
    fs::read_to_string(proc_path(key))
        .map(|v| v.trim().to_string())
        .map_err(|e| Error::Sysctl {
            key: key.to_string(),
            reason: format!("cannot read it: {e}"),
        })
}

/// Reads a sysctl holding whitespace-separated numbers (e.g. `net.ipv4.tcp_rmem`).
pub fn read_numbers(key: &str) -> Result<Vec<u64>, Error> {
    let text = read(key)?;
    text.split_whitespace()
        .map(|n| {
            n.parse().map_err(|_| Error::Sysctl {
                key: key.to_string(),
                reason: format!("unexpected value '{text}'"),
            })
        })
        .collect()
}

fn write(key: &str, value: &str) -> Result<(), Error> {
    fs::write(proc_path(key), value).map_err(|e| Error::Sysctl {
        key: key.to_string(),
        reason: format!("cannot set it to {value}: {e}"),
    })
}

/// The sysctls synguard changed, and their values before; restores them on `restore` (or, as
/// a last resort, on drop).
struct Sysctls {
    state_file: PathBuf,
    original: Vec<(String, String)>,
    restored: bool,
}

impl Sysctls {
    /// Records the current values of `keys` (or those a crashed run recorded) in a state file
    /// under `state_dir`, unique to this network namespace.
    fn take(state_dir: &Path, keys: &[&str]) -> Result<Sysctls, Error> {
        let state_file = state::file(state_dir, "sysctl", None)?;
        let mut original = match fs::read_to_string(&state_file) {
            Ok(text) => {
                warn!(
                    file = %state_file.display(),
                    "a previous run did not restore its sysctls (crash or kill -9); \
                     restoring the values it recorded"
                );
                parse_state(&text)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(reason) => {
                return Err(Error::StateDir {
                    action: "read",
                    path: state_file,
                    reason,
                });
            }
        };
        for key in keys {
            if !original.iter().any(|(k, _)| k == key) {
                original.push((key.to_string(), read(key)?));
            }
        }
        let text: String = original.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        if let Err(reason) = fs::write(&state_file, text) {
            return Err(Error::StateDir {
                action: "write",
                path: state_file,
                reason,
            });
        }
        Ok(Sysctls {
            state_file,
            original,
            restored: false,
        })
    }

    /// The value `key` had before synguard started.
    pub fn original(&self, key: &str) -> Option<&str> {
        self.original
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `key`, which must be one of those taken.
    pub fn set(&self, key: &str, value: &str) -> Result<(), Error> {
        debug_assert!(self.original(key).is_some(), "{key} was not recorded");
        if read(key)? != value {
            write(key, value)?;
            info!(sysctl = key, value, "set");
        }
        Ok(())
    }

    /// Puts every recorded value back and removes the state file.
    pub fn restore(mut self) -> Result<(), Error> {
        self.restore_all()
    }

    /// Leaves the values set and the state file in place, for the next start to take over.
    pub fn keep(mut self) {
        self.restored = true;
    }

    fn restore_all(&mut self) -> Result<(), Error> {
        if self.restored {
            return Ok(());
        }
        self.restored = true;
        let mut first_error = None;
        for (key, value) in &self.original {
            match read(key) {
                Ok(current) if current == *value => {}
                _ => match write(key, value) {
                    Ok(()) => info!(sysctl = %key, value = %value, "restored"),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                },
            }
        }
        match first_error {
            // Keep the state file: the next start will try again.
            Some(e) => Err(e),
            None => {
                let _ = fs::remove_file(&self.state_file);
                Ok(())
            }
        }
    }
}

impl Drop for Sysctls {
    fn drop(&mut self) {
        if let Err(e) = self.restore_all() {
            warn!(error = %e, "restoring sysctls failed; the next start will retry");
        }
    }
}

/// The namespace's sysctls, shared by the interfaces one synguard protects. Each interface
/// holds a [`SysctlClaim`]: it joins while its mode sends cookies (the values are recorded
/// when the first joins, `tcp_timestamps` set), and claims `tcp_syncookies=2` while it needs
/// it (cookie mode always; auto mode during an attack). `tcp_syncookies` is 2 while any
/// interface claims it and its original value otherwise; everything is put back when the
/// last interface leaves.
#[derive(Clone)]
pub struct NamespaceSysctls {
    state_dir: PathBuf,
    shared: Arc<Mutex<Shared>>,
}

#[derive(Default)]
struct Shared {
    taken: Option<Sysctls>,
    joined: BTreeSet<String>,
    cookies: BTreeSet<String>,
}

impl NamespaceSysctls {
    pub fn new(state_dir: &Path) -> NamespaceSysctls {
        NamespaceSysctls {
            state_dir: state_dir.to_path_buf(),
            shared: Arc::default(),
        }
    }

    /// The claim of one interface, which starts out not joined.
    pub fn claim(&self, iface: &str) -> SysctlClaim {
        SysctlClaim {
            owner: self.clone(),
            iface: iface.to_string(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    /// Leaves every value as it is, with its state file, for the next start to take over
    /// (a handover).
    pub fn keep(&self) {
        if let Some(taken) = self.lock().taken.take() {
            taken.keep();
        }
    }

    /// Puts every value back now, whoever has joined.
    pub fn restore(&self) -> Result<(), Error> {
        let mut shared = self.lock();
        shared.joined.clear();
        shared.cookies.clear();
        match shared.taken.take() {
            Some(taken) => taken.restore(),
            None => Ok(()),
        }
    }
}

/// One interface's part in the namespace's sysctls (see [`NamespaceSysctls`]).
pub struct SysctlClaim {
    owner: NamespaceSysctls,
    iface: String,
}

impl SysctlClaim {
    /// Joins (the mode sends cookies): records the values if nobody had, sets
    /// `tcp_timestamps=2` with `timestamps`, and `tcp_syncookies` as the claims say.
    pub fn join(&self, timestamps: bool) -> Result<(), Error> {
        let mut shared = self.owner.lock();
        if shared.taken.is_none() {
            let mut keys = vec![SYNCOOKIES];
            if timestamps {
                keys.push(TIMESTAMPS);
            }
            shared.taken = Some(Sysctls::take(&self.owner.state_dir, &keys)?);
        }
        shared.joined.insert(self.iface.clone());
        let taken = shared.taken.as_ref().expect("taken above");
        if timestamps {
            taken.set(TIMESTAMPS, "2")?;
        }
        apply_syncookies(&shared)
    }

    /// Claims `tcp_syncookies=2` for this interface, or lets go of it. Nothing happens unless
    /// it has joined.
    pub fn cookies(&self, on: bool) -> Result<(), Error> {
        let mut shared = self.owner.lock();
        if !shared.joined.contains(&self.iface) {
            return Ok(());
        }
        match on {
            true => shared.cookies.insert(self.iface.clone()),
            false => shared.cookies.remove(&self.iface),
        };
        apply_syncookies(&shared)
    }

    /// Leaves (the mode no longer sends cookies, or the interface is detached); the last to
    /// leave puts the values back.
    pub fn leave(&self) -> Result<(), Error> {
        let mut shared = self.owner.lock();
        shared.joined.remove(&self.iface);
        shared.cookies.remove(&self.iface);
        if !shared.joined.is_empty() {
            return apply_syncookies(&shared);
        }
        match shared.taken.take() {
            Some(taken) => taken.restore(),
            None => Ok(()),
        }
    }
}

fn apply_syncookies(shared: &Shared) -> Result<(), Error> {
    let Some(taken) = &shared.taken else {
        return Ok(());
    };
    match shared.cookies.is_empty() {
        false => taken.set(SYNCOOKIES, "2"),
        true => taken.set(SYNCOOKIES, taken.original(SYNCOOKIES).unwrap_or("1")),
    }
}

fn parse_state(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_file_round_trip() {
        let parsed = parse_state("net.ipv4.tcp_syncookies=1\nnet.ipv4.tcp_timestamps = 1\njunk\n");
        assert_eq!(
            parsed,
            vec![
                ("net.ipv4.tcp_syncookies".to_string(), "1".to_string()),
                ("net.ipv4.tcp_timestamps".to_string(), "1".to_string()),
            ]
        );
    }

    #[test]
    fn proc_paths() {
        assert_eq!(
            proc_path("net.ipv4.tcp_syncookies"),
            Path::new("/proc/sys/net/ipv4/tcp_syncookies")
        );
    }
}
