//! The state directory (`--state-dir`): files that outlive a run (recorded sysctls, locks),
//! named after the network namespace they belong to, and the interface.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::Error;

/// The inode of a network namespace file (/proc/.../ns/net): what tells namespaces apart.
pub fn netns_inode(path: &str) -> Result<u64, Error> {
    fs::metadata(path)
        .map(|m| m.ino())
        .map_err(|e| Error::Other(format!("cannot identify the network namespace: {e}")))
}

/// `state_dir/PREFIX-netnsINODE[-IFACE]` for this process's namespace, with the directory
/// created if it is missing.
pub fn file(state_dir: &Path, prefix: &str, iface: Option<&str>) -> Result<PathBuf, Error> {
    let netns = netns_inode("/proc/self/ns/net")?;
    fs::create_dir_all(state_dir).map_err(|reason| Error::StateDir {
        action: "create the state directory",
        path: state_dir.to_path_buf(),
        reason,
    })?;
    let name = match iface {
        Some(iface) => format!("{prefix}-netns{netns}-{iface}"),
        None => format!("{prefix}-netns{netns}"),
    };
    Ok(state_dir.join(name))
}
