//! Watching the config file (and the list files it names) for changes, so that a fleet's
//! configuration reaches every node without a signal or a restart.
//!
//! Directories are watched, not files: an editor saves by renaming a new file over the old
//! one, and the kubelet updates a mounted ConfigMap by pointing a `..data` symlink at a fresh
//! directory with one `rename(2)` (kubernetes `pkg/volume/util/atomic_writer.go`), so the file's
//! own inode never changes. Any event in a watched directory is followed, after a short quiet
//! spell, by reading the files again; only a change of their bytes counts, so a touch, an
//! unrelated file or a ConfigMap update of another key does not reload.

use std::{
    collections::HashSet,
    os::fd::{AsFd, AsRawFd, RawFd},
    path::{Path, PathBuf},
    time::Duration,
};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::{Interest, unix::AsyncFd};
use tracing::debug;

/// How long the directories must stay quiet before the files are read: a save or a swap is a
/// burst of events (create, write, rename, delete) that should read as one change.
const SETTLE: Duration = Duration::from_millis(100);
/// The longest a burst may delay the read.
const SETTLE_AT_MOST: Duration = Duration::from_secs(1);

/// What happens in a directory that can change a watched file's bytes.
fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_ONLYDIR
}

pub struct ConfigWatch {
    inotify: AsyncFd<Descriptor>,
    files: Vec<PathBuf>,
    watched: HashSet<PathBuf>,
    /// The files' bytes as last seen (`None` for a file that could not be read).
    seen: Vec<Option<Vec<u8>>>,
}

impl ConfigWatch {
    /// Watches `files` from their contents as they are now.
    pub fn new(files: Vec<PathBuf>) -> std::io::Result<ConfigWatch> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        // SAFETY: the descriptor is owned by the `Descriptor` the `AsyncFd` holds, so it stays
        // open for as long as it is registered.
        let inotify =
            unsafe { AsyncFd::register_with_interest(Descriptor(inotify), Interest::READABLE) }
                .map_err(std::io::Error::from)?;
        let mut watch = ConfigWatch {
            inotify,
            files: Vec::new(),
            watched: HashSet::new(),
            seen: Vec::new(),
        };
        watch.follow(files);
        Ok(watch)
    }

    /// Follows `files` from now on (a reload may name other list files), their bytes as they
    /// are now taken as seen.
    pub fn follow(&mut self, files: Vec<PathBuf>) {
        self.seen = files.iter().map(|f| contents(f)).collect();
        self.files = files;
        self.watch_directories();
    }

    /// The directories a watched file's bytes depend on: its own, and that of whatever its
    /// symlinks lead to (for a ConfigMap that moves, hence watched again after every change).
    fn watch_directories(&mut self) {
        let mut dirs = Vec::new();
        for file in &self.files {
            dirs.extend(file.parent().map(Path::to_path_buf));
            if let Ok(real) = std::fs::canonicalize(file) {
                dirs.extend(real.parent().map(Path::to_path_buf));
            }
        }
        for dir in dirs {
            let dir = match dir.as_os_str().is_empty() {
                true => PathBuf::from("."),
                false => dir,
            };
            if self.watched.contains(&dir) {
                continue;
            }
            match self.inotify.get_ref().0.add_watch(&dir, mask()) {
                Ok(_) => {
                    debug!(dir = %dir.display(), "watching for config changes");
                    self.watched.insert(dir);
                }
                // A directory that does not exist (yet) has no file to change.
                Err(e) => debug!(dir = %dir.display(), error = %e, "not watched"),
            }
        }
    }

    /// Waits until a watched file's bytes differ from what was last seen; they are then taken
    /// as seen.
    pub async fn changed(&mut self) {
        loop {
            self.next_burst().await;
            // A directory the old target lived in may be gone, a new one may have come.
            self.watched.clear();
            self.watch_directories();
            let now: Vec<_> = self.files.iter().map(|f| contents(f)).collect();
            if now != self.seen {
                self.seen = now;
                return;
            }
        }
    }

    /// Waits for an event, then for the directories to settle.
    async fn next_burst(&mut self) {
        self.drain().await;
        let deadline = tokio::time::Instant::now() + SETTLE_AT_MOST;
        while tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + SETTLE),
            self.drain(),
        )
        .await
        .is_ok()
        {}
    }

    /// Waits until the inotify descriptor has events, and reads them all.
    async fn drain(&self) {
        loop {
            let Ok(mut ready) = self.inotify.readable().await else {
                // Readiness cannot fail on an inotify descriptor; should it, nothing changes.
                return std::future::pending().await;
            };
            match ready.try_io(|fd| fd.get_ref().0.read_events().map_err(std::io::Error::from)) {
                Ok(Ok(_)) => return,
                Ok(Err(e)) => {
                    debug!(error = %e, "reading config watch events failed");
                    return;
                }
                Err(_would_block) => continue,
            }
        }
    }
}

/// The inotify instance, as tokio's reactor wants it.
struct Descriptor(Inotify);

impl AsRawFd for Descriptor {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

fn contents(file: &Path) -> Option<Vec<u8>> {
    std::fs::read(file).ok()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A ConfigMap volume as the kubelet lays it out: the file a symlink through `..data`,
    /// updated by renaming a new `..data` over the old.
    #[tokio::test]
    async fn a_configmap_swap_is_one_change_and_an_unrelated_file_none() {
        let dir = std::env::temp_dir().join(format!("synguard-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("..v1")).unwrap();
        std::fs::write(dir.join("..v1/synguard.toml"), "mode = \"off\"\n").unwrap();
        symlink("..v1", dir.join("..data")).unwrap();
        symlink("..data/synguard.toml", dir.join("synguard.toml")).unwrap();
        let mut watch = ConfigWatch::new(vec![dir.join("synguard.toml")]).unwrap();
        let quiet = Duration::from_millis(400);

        // Something else in the directory, and a rewrite with the same bytes: no change.
        std::fs::write(dir.join("other"), "x").unwrap();
        std::fs::write(dir.join("..v1/synguard.toml"), "mode = \"off\"\n").unwrap();
        assert!(tokio::time::timeout(quiet, watch.changed()).await.is_err());

        // The swap.
        std::fs::create_dir_all(dir.join("..v2")).unwrap();
        std::fs::write(dir.join("..v2/synguard.toml"), "mode = \"cookie\"\n").unwrap();
        symlink("..v2", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        std::fs::remove_dir_all(dir.join("..v1")).unwrap();
        tokio::time::timeout(Duration::from_secs(3), watch.changed())
            .await
            .expect("the swap is seen");
        assert!(tokio::time::timeout(quiet, watch.changed()).await.is_err());

        // An edit of the file itself, through the symlinks.
        std::fs::write(dir.join("..v2/synguard.toml"), "mode = \"auto\"\n").unwrap();
        tokio::time::timeout(Duration::from_secs(3), watch.changed())
            .await
            .expect("the edit is seen");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
