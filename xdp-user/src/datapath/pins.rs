//! Pins in the BPF filesystem, so that protection outlives the controller: the XDP link and
//! the maps of an interface live under `/sys/fs/bpf/synguard/IFACE/` (`--bpffs` moves the
//! filesystem; in another network namespace than the first, `netns<inode>-IFACE`). A controller that dies, even by kill -9,
//! leaves the program attached and working; the next one adopts it and swaps in its own
//! program atomically (bpf_link_update), keeping every map and its state. A clean stop
//! removes it all.
//!
//! A lock file next to the sysctl state keeps a second controller off an interface that one
//! already runs on.

use std::{
    ffi::CString,
    fs::{self, File},
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use synguard_common::PINNED_MAPS;

use crate::{Error, host::state};

/// statfs(2) f_type of a BPF filesystem (include/uapi/linux/magic.h, BPF_FS_MAGIC).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// One interface's pin directory.
#[derive(Clone, Debug)]
pub struct PinDir {
    pub bpffs: PathBuf,
    pub path: PathBuf,
}

impl PinDir {
    /// The directory for `iface` in the caller's network namespace, in the BPF filesystem at
    /// `bpffs`.
    pub fn for_iface(bpffs: &Path, iface: &str) -> Result<PinDir, Error> {
        // The calling thread's namespace (a test may enter one on a thread of its own).
        let here = state::netns_inode("/proc/thread-self/ns/net")?;
        let init = state::netns_inode("/proc/1/ns/net").ok();
        let name = match init {
            Some(init) if init == here => iface.to_string(),
            _ => format!("netns{here}-{iface}"),
        };
        Ok(PinDir {
            bpffs: bpffs.to_path_buf(),
            path: bpffs.join("synguard").join(name),
        })
    }

    pub fn link(&self) -> PathBuf {
        self.path.join("link")
    }

    /// The link of the tracing program that keeps the owner filter (`owners.rs`).
    pub fn sockets_link(&self) -> PathBuf {
        self.path.join("sockets_link")
    }

    /// The link of the program that notes request sockets' peers (`owners.rs`).
    pub fn requests_link(&self) -> PathBuf {
        self.path.join("requests_link")
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Warns, once attached, when these pins cannot outlive the process: then a crash or a
    /// handover leaves nothing attached, and the next start cannot take over.
    pub fn warn_if_they_die_with_the_process(&self) {
        if pin_life(&self.bpffs) == PinLife::DiesWithProcess {
            tracing::warn!(
                bpffs = %self.bpffs.display(),
                "protection will not survive synguard's exit: the BPF filesystem at {} is \
                 mounted only in synguard's own mount namespace (as `ip netns exec` makes one), \
                 so its pins, and with them the XDP program, go when synguard does (a crash or \
                 kill -9 included), and the next start attaches afresh instead of taking over. \
                 Pass --bpffs a BPF filesystem the host mounted (e.g. bind-mount the host's \
                 /sys/fs/bpf into the namespace), or run synguard in the host's mount namespace \
                 (`nsenter --net=/run/netns/NAME synguard ...` instead of `ip netns exec`)",
                self.bpffs.display()
            );
        }
    }

    /// Whether a controller left its program attached here.
    pub fn has_link(&self) -> bool {
        self.link().exists()
    }

    /// Creates the directory, mounting the BPF filesystem first if nothing is mounted there
    /// (as bpftool does).
    pub fn create(&self) -> Result<(), Error> {
        ensure_bpffs(&self.bpffs)?;
        fs::create_dir_all(&self.path).map_err(|e| {
            Error::Other(format!(
                "cannot create the pin directory {}: {e}",
                self.path.display()
            ))
        })
    }

    /// Removes the link's and the maps' pins and the directory. The program stays attached as
    /// long as the caller holds the link.
    pub fn remove(&self) {
        let _ = fs::remove_file(self.link());
        let _ = fs::remove_file(self.sockets_link());
        let _ = fs::remove_file(self.requests_link());
        for name in PINNED_MAPS {
            let _ = fs::remove_file(self.map(name));
        }
        let _ = fs::remove_dir(&self.path);
    }
}

/// Mounts a BPF filesystem on `dir` unless one is there.
pub fn ensure_bpffs(dir: &Path) -> Result<(), Error> {
    if is_bpffs(dir) {
        return Ok(());
    }
    let fail = |reason: io::Error| Error::Bpffs {
        dir: dir.to_path_buf(),
        reason,
    };
    fs::create_dir_all(dir).map_err(fail)?;
    let target = CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| fail(io::Error::from(io::ErrorKind::InvalidInput)))?;
    let kind = CString::new("bpf").expect("no NUL");
    // SAFETY: NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            kind.as_ptr(),
            target.as_ptr(),
            kind.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(fail(io::Error::last_os_error()));
    }
    Ok(())
}

/// Whether pins in a BPF filesystem outlive this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinLife {
    Outlives,
    /// The filesystem is mounted only in this process's own mount namespace, which goes with
    /// the process (and the filesystem's pins with it).
    DiesWithProcess,
    /// Could not tell (e.g. an ancestor's /proc entry unreadable without CAP_SYS_PTRACE).
    Unknown,
}

/// Gathers what [`judge_pin_life`] needs for the BPF filesystem at `dir`: this process's mount
/// namespace, and the nearest ancestor process in another one (`ip netns exec` and
/// `unshare -m` make a namespace for the program they start), with that ancestor's mounts.
pub fn pin_life(dir: &Path) -> PinLife {
    use std::os::unix::fs::MetadataExt;
    let Ok(own) = fs::read_link("/proc/self/ns/mnt") else {
        return PinLife::Unknown;
    };
    let Ok(meta) = fs::metadata(dir) else {
        return PinLife::Unknown;
    };
    let dev = meta.dev();
    let dev = (libc::major(dev), libc::minor(dev));
    let mut pid = std::os::unix::process::parent_id();
    // Bounded: process trees are not deeper than this in practice.
    for _ in 0..64 {
        if pid == 0 {
            // No ancestor outside this namespace: it is the outermost there is.
            return PinLife::Outlives;
        }
        let Ok(ns) = fs::read_link(format!("/proc/{pid}/ns/mnt")) else {
            return PinLife::Unknown;
        };
        if ns != own {
            let mounts = fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok();
            return judge_pin_life(&own, Some(&ns), dev, mounts.as_deref());
        }
        pid = match parent_of(pid) {
            Some(parent) => parent,
            None => return PinLife::Unknown,
        };
    }
    PinLife::Unknown
}

/// The parent of `pid` (field 4 of /proc/PID/stat, after the parenthesised command name).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// A BPF filesystem lives as long as some mount of it does. `outer_ns` is the mount namespace
/// of the nearest ancestor outside this process's own (none: this one is the outermost, and
/// its mounts outlive the process). The filesystem outlives the process only if that outer
/// namespace mounts the same instance (the same device numbers in its mountinfo): each
/// `mount -t bpf` makes a new instance.
pub fn judge_pin_life(
    own_ns: &Path,
    outer_ns: Option<&Path>,
    dev: (u32, u32),
    outer_mountinfo: Option<&str>,
) -> PinLife {
    let Some(outer_ns) = outer_ns else {
        return PinLife::Outlives;
    };
    if own_ns == outer_ns {
        return PinLife::Outlives;
    }
    let Some(mounts) = outer_mountinfo else {
        return PinLife::Unknown;
    };
    let wanted = format!("{}:{}", dev.0, dev.1);
    // mountinfo: "ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [FIELDS] - FSTYPE SOURCE ..."
    let shared = mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let device = fields.nth(2);
        let fstype = line
            .split(" - ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next());
        device == Some(wanted.as_str()) && fstype == Some("bpf")
    });
    if shared {
        PinLife::Outlives
    } else {
        PinLife::DiesWithProcess
    }
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(path) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into a zeroed struct it is given.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid out pointer.
    let rc = unsafe { libc::statfs(path.as_ptr(), &mut stat) };
    rc == 0 && stat.f_type as i64 == BPF_FS_MAGIC
}

/// An exclusive lock on an interface, held for the controller's life (flock(2): the kernel
/// releases it when the process dies, however it dies).
pub struct InterfaceLock {
    _lock: Held,
}

impl InterfaceLock {
    pub fn take(state_dir: &Path, iface: &str) -> Result<InterfaceLock, Error> {
        let path = state::file(state_dir, "lock", Some(iface))?;
        let held = lock(&path)?.ok_or_else(|| Error::InterfaceTaken {
            iface: iface.to_string(),
            lock: path.clone(),
        })?;
        Ok(InterfaceLock { _lock: held })
    }
}

/// An exclusive lock on the network namespace, held for the controller's life. synguard owns
/// the namespace's tcp_syncookies and tcp_timestamps (it records, sets, follows and restores
/// them), and two synguards in one namespace would record each other's values as the
/// originals and undo each other's settings: one synguard protects all the interfaces of a
/// namespace it is given.
pub struct NamespaceLock {
    _lock: Held,
}

impl NamespaceLock {
    pub fn take(state_dir: &Path, ifaces: &[String]) -> Result<NamespaceLock, Error> {
        let path = state::file(state_dir, "lock", None)?;
        let Some(mut held) = lock(&path)? else {
            let other = fs::read_to_string(&path).unwrap_or_default();
            return Err(Error::NamespaceTaken {
                holder: other.trim().to_string(),
            });
        };
        // Name the holder, for the error above.
        use std::io::Write as _;
        let _ = held.file.set_len(0);
        let _ = held.file.write_all(ifaces.join(",").as_bytes());
        Ok(NamespaceLock { _lock: held })
    }
}

/// A locked lock file, removed when let go (a clean exit; after a crash the file stays, and
/// the next start locks it again). The file goes while the lock is still held, and [`lock`]
/// only trusts a lock on the file its path still names: whoever opened the old file just
/// before it went tries again on a new one.
struct Held {
    file: File,
    path: PathBuf,
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The file at `path`, locked exclusively; `None` if another process holds the lock.
fn lock(path: &Path) -> Result<Option<Held>, Error> {
    use std::os::unix::fs::MetadataExt;
    for _ in 0..8 {
        let Some(file) = lock_file(path)? else {
            return Ok(None);
        };
        // Locked, but the holder may have removed the file meanwhile: then the lock is on a
        // file nobody else will open, and the path names a new one.
        let same = match (file.metadata(), fs::metadata(path)) {
            (Ok(locked), Ok(named)) => locked.ino() == named.ino() && locked.dev() == named.dev(),
            _ => false,
        };
        if same {
            return Ok(Some(Held {
                file,
                path: path.to_path_buf(),
            }));
        }
    }
    Ok(None)
}

/// Opens (or makes) the file at `path` and locks it, without waiting.
fn lock_file(path: &Path) -> Result<Option<File>, Error> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|reason| Error::StateDir {
            action: "open",
            path: path.to_path_buf(),
            reason,
        })?;
    // SAFETY: flock on a descriptor this function owns.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(Some(file));
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(None);
    }
    Err(Error::StateDir {
        action: "lock",
        path: path.to_path_buf(),
        reason: err,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTER_MOUNTS: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 25 0:29 / /sys/fs/bpf rw,nosuid,nodev,noexec,relatime shared:14 - bpf bpf rw,mode=700
90 30 0:51 / /run/synguard-lab/bpf rw,relatime shared:40 - bpf bpf rw
";

    #[test]
    fn pins_outlive_the_process_unless_their_filesystem_is_its_own() {
        let (a, b) = (Path::new("mnt:[4026531841]"), Path::new("mnt:[4026532999]"));
        assert_eq!(judge_pin_life(a, Some(a), (0, 99), None), PinLife::Outlives);
        // mountinfo of the outer namespace, as /proc/PID/mountinfo shows it.
        // Another mount namespace (ip netns exec) that sees the host's instance.
        assert_eq!(
            judge_pin_life(b, Some(a), (0, 29), Some(OUTER_MOUNTS)),
            PinLife::Outlives
        );
        assert_eq!(
            judge_pin_life(b, Some(a), (0, 51), Some(OUTER_MOUNTS)),
            PinLife::Outlives
        );
        // An instance mounted in that namespace alone.
        assert_eq!(
            judge_pin_life(b, Some(a), (0, 77), Some(OUTER_MOUNTS)),
            PinLife::DiesWithProcess
        );
        // The same device numbers on a filesystem of another type do not count.
        assert_eq!(
            judge_pin_life(b, Some(a), (0, 23), Some(OUTER_MOUNTS)),
            PinLife::DiesWithProcess
        );
        assert_eq!(
            judge_pin_life(b, None, (0, 29), None),
            PinLife::Outlives,
            "outermost"
        );
        assert_eq!(judge_pin_life(b, Some(a), (0, 29), None), PinLife::Unknown);
    }
}
