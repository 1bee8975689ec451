//! The filter of sources that may own a socket, from the controller's side
//! (`synguard_common::owners`; docs/design.md, "The fast path"). The controller attaches the
//! tracing program that notes the peers of sockets the XDP program never sees made, and
//! rebuilds the filter from the kernel's socket table every few seconds: a fresh generation,
//! switched in only when complete, so bits of sockets that are gone do not pile up. Until the
//! first generation is built the filter is not armed, and every SYN gets the socket lookup.
//!
//! Why the rebuild cannot lose a socket: both generations get every live bit, the XDP
//! program's and the tracing program's. The rebuild clears the generation nobody reads,
//! waits [`GRACE`], then reads the socket table and ORs its peers in. A bit set before the
//! clear reached its word is lost only for the rebuilt generation; it was set for a packet the
//! kernel was about to make a socket of (within microseconds of XDP, unless the kernel
//! deferred it), or by the tracing program as the socket took a state: either way the socket
//! exists when the table is read after the grace, and is read. The table is read from
//! `/proc/net/tcp` and `/proc/net/tcp6`, which list established, TIME_WAIT and request
//! sockets (tcp4_seq_show(), net/ipv4/tcp_ipv4.c), bucket by bucket under the bucket's lock.

use std::{
    fs::File,
    io::Read,
    os::fd::{AsFd, AsRawFd},
    path::Path,
    ptr::NonNull,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use aya::{
    Btf, Ebpf,
    maps::{Map, MapData},
    programs::{FEntry, RawTracePoint, links::FdLink},
};
use synguard_common::{
    OWNERS_MAP, OWNERS_STATE_MAP, REQUEST_FUNCTION, REQUEST_PROGRAM_NAME, TRACE_PROGRAM_NAME,
    owners::{self, OwnersState},
};
use tracing::{debug, warn};

use crate::{Error, datapath::pins::PinDir};

/// How often the filter is rebuilt from the socket table.
pub const REBUILD_EVERY: Duration = Duration::from_secs(5);
/// Between clearing a generation and reading the socket table into it.
pub const GRACE: Duration = Duration::from_millis(200);

/// The raw tracepoint the tracing program attaches to (include/trace/events/sock.h).
const TRACEPOINT: &str = "inet_sock_set_state";

/// The tracing programs' links and the thread that rebuilds the filter. Dropping it stops the
/// thread; the links go with it unless pinned.
pub struct OwnersKeeper {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The tracepoint's link, then the request program's if it could be attached.
    links: Vec<FdLink>,
    armed: Arc<AtomicBool>,
    rebuilds: Arc<AtomicU64>,
    filter: Arc<Shared>,
}

impl OwnersKeeper {
    /// Attaches the tracing program and starts the rebuilds; the filter is armed after the
    /// first. With `pins`, the tracing program's link is pinned next to the XDP link (a
    /// previous controller's pin is replaced), so it keeps the filter as long as the XDP
    /// program runs.
    pub fn start(ebpf: &mut Ebpf, pins: Option<&PinDir>) -> Result<OwnersKeeper, Error> {
        let filter = Arc::new(Shared::take(ebpf)?);
        let program: &mut RawTracePoint = program_mut(ebpf, TRACE_PROGRAM_NAME)?;
        program
            .load()
            .map_err(|e| Error::Other(format!("loading the socket tracing program failed: {e}")))?;
        let id = program.attach(TRACEPOINT).map_err(|e| {
            Error::Other(format!(
                "attaching to the {TRACEPOINT} tracepoint failed: {e}"
            ))
        })?;
        let link = FdLink::from(
            program
                .take_link(id)
                .map_err(|e| Error::Other(e.to_string()))?,
        );
        let request_link = match attach_request_program(ebpf) {
            Ok(link) => Some(link),
            Err(e) => {
                warn!(
                    "request sockets (the kernel's own half-open handshakes) made from SYNs that \
                     reach it by another interface or over loopback are learned from the socket \
                     table only, within {} s, not at once: {e}",
                    REBUILD_EVERY.as_secs()
                );
                None
            }
        };
        let pin = |link: FdLink, path: std::path::PathBuf| -> Result<FdLink, Error> {
            let _ = std::fs::remove_file(&path);
            Ok(FdLink::from(link.pin(&path).map_err(|e| {
                Error::Other(format!("pinning {} failed: {e}", path.display()))
            })?))
        };
        let mut links = Vec::new();
        match pins {
            Some(pins) => {
                links.push(pin(link, pins.sockets_link())?);
                if let Some(request_link) = request_link {
                    links.push(pin(request_link, pins.requests_link())?);
                }
            }
            None => links.extend([Some(link), request_link].into_iter().flatten()),
        }
        let stop = Arc::new(AtomicBool::new(false));
        let armed = Arc::new(AtomicBool::new(false));
        let rebuilds = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, armed, rebuilds, filter) = (
                Arc::clone(&stop),
                Arc::clone(&armed),
                Arc::clone(&rebuilds),
                Arc::clone(&filter),
            );
            thread::Builder::new()
                .name("synguard-owners".into())
                .spawn(move || keep(&filter, &stop, &armed, &rebuilds))
                .map_err(|e| Error::Other(format!("starting the filter thread failed: {e}")))?
        };
        Ok(OwnersKeeper {
            stop,
            thread: Some(thread),
            links,
            armed,
            rebuilds,
            filter,
        })
    }

    /// The listener epoch, as the tracing program keeps it.
    pub fn listener_epoch(&self) -> u64 {
        // SAFETY: the third and fourth u32 of the 16-byte state: the u64 epoch, 8-aligned,
        // written atomically by the tracing program.
        let epoch = unsafe { &*(self.filter.state.ptr.as_ptr().add(8) as *const AtomicU64) };
        epoch.load(Ordering::SeqCst)
    }

    /// A copy of one generation of the filter, as it is now.
    pub fn bits(&self, generation: u32) -> owners::OwnerBits {
        let mut bits = owners::OwnerBits::EMPTY;
        for (i, word) in bits.0.iter_mut().enumerate() {
            *word = self.filter.word(generation, i).load(Ordering::SeqCst);
        }
        bits
    }

    /// Starts a rebuild now, without waiting for it.
    pub fn rebuild_soon(&self) {
        if let Some(thread) = &self.thread {
            thread.thread().unpark();
        }
    }

    /// Starts a rebuild now and waits (at most 5 s) until one has completed after this call.
    pub fn rebuild_now(&self) {
        let before = self.rebuilds.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.rebuilds.load(Ordering::SeqCst) < before + 2 && Instant::now() < deadline {
            if let Some(thread) = &self.thread {
                thread.thread().unpark();
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether request sockets are noted as the kernel makes them (the fentry program could be
    /// attached), not only by the rebuilds.
    pub fn requests_traced(&self) -> bool {
        self.links.len() == 2
    }

    /// Whether the fast path is armed.
    pub fn armed(&self) -> bool {
        self.armed.load(Ordering::Relaxed)
    }

    /// The flag behind [`OwnersKeeper::armed`].
    pub fn armed_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.armed)
    }
}

impl Drop for OwnersKeeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// The object's program `name`, as its type.
fn program_mut<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P, Error>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| Error::Other(format!("program {name} missing from the object")))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| Error::Other(e.to_string()))
}

/// Loads and attaches the program that notes request sockets' peers (fentry: it needs the
/// kernel's BPF trampolines, which some kernels lack).
fn attach_request_program(ebpf: &mut Ebpf) -> Result<FdLink, Error> {
    let btf =
        Btf::from_sys_fs().map_err(|e| Error::Other(format!("reading the kernel's BTF: {e}")))?;
    let requests: &mut FEntry = program_mut(ebpf, REQUEST_PROGRAM_NAME)?;
    requests
        .load(REQUEST_FUNCTION, &btf)
        .map_err(|e| Error::Other(format!("loading a program at {REQUEST_FUNCTION}(): {e}")))?;
    let id = requests
        .attach()
        .map_err(|e| Error::Other(format!("attaching to {REQUEST_FUNCTION}(): {e}")))?;
    Ok(FdLink::from(
        requests
            .take_link(id)
            .map_err(|e| Error::Other(e.to_string()))?,
    ))
}

/// The rebuild loop: the first generation at once, then one every [`REBUILD_EVERY`].
fn keep(filter: &Shared, stop: &AtomicBool, armed: &AtomicBool, rebuilds: &AtomicU64) {
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        match filter.rebuild(stop) {
            Ok(Some(peers)) => {
                armed.store(true, Ordering::Relaxed);
                rebuilds.fetch_add(1, Ordering::SeqCst);
                debug!(peers, took = ?started.elapsed(), "owner filter rebuilt");
            }
            Ok(None) => return,
            Err(e) => warn!("rebuilding the owner filter failed, keeping the old one: {e}"),
        }
        thread::park_timeout(REBUILD_EVERY);
    }
}

/// The two maps, mapped into this process (both are `BPF_F_MMAPABLE` arrays), so that bits
/// are set with the same atomic OR the program uses and no write of a whole value can undo a
/// bit the program set meanwhile.
struct Shared {
    _maps: [MapData; 2],
    bits: Mapping,
    state: Mapping,
}

// SAFETY: the mappings are shared memory accessed only through atomics.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    fn take(ebpf: &mut Ebpf) -> Result<Shared, Error> {
        let data = |ebpf: &mut Ebpf, name: &'static str| match ebpf.take_map(name) {
            Some(Map::Array(data)) => Ok(data),
            _ => Err(Error::Other(format!(
                "map {name} missing from the BPF object"
            ))),
        };
        let bits_map = data(ebpf, OWNERS_MAP)?;
        let state_map = data(ebpf, OWNERS_STATE_MAP)?;
        let bits = Mapping::new(&bits_map, 2 * size_of::<owners::OwnerBits>(), OWNERS_MAP)?;
        let state = Mapping::new(&state_map, size_of::<OwnersState>(), OWNERS_STATE_MAP)?;
        Ok(Shared {
            _maps: [bits_map, state_map],
            bits,
            state,
        })
    }

    fn word(&self, generation: u32, word: usize) -> &AtomicU64 {
        let index = generation as usize % 2 * owners::WORDS + word % owners::WORDS;
        // SAFETY: in bounds of the mapping (2 generations of WORDS words), 8-byte aligned
        // (page-aligned base), and only ever accessed atomically, here and in the kernel.
        unsafe { &*(self.bits.ptr.as_ptr() as *const AtomicU64).add(index) }
    }

    /// `armed` and `active`, the first two u32 of the state.
    fn state_field(&self, index: usize) -> &AtomicU32 {
        // SAFETY: within the 16-byte state, aligned, accessed atomically.
        unsafe { &*(self.state.ptr.as_ptr() as *const AtomicU32).add(index % 2) }
    }

    /// Builds the generation nobody reads and switches to it. Returns the number of peers
    /// read, or `None` if asked to stop meanwhile.
    fn rebuild(&self, stop: &AtomicBool) -> Result<Option<usize>, Error> {
        let active = self.state_field(1).load(Ordering::SeqCst) & 1;
        let next = 1 - active;
        for word in 0..owners::WORDS {
            self.word(next, word).store(0, Ordering::SeqCst);
        }
        // Not `park`: a wake-up must not cut the grace short.
        thread::sleep(GRACE);
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let mut peers = 0;
        for table in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
            let text = read_table(Path::new(table))?;
            for bit in peer_bits(&text) {
                self.word(next, (bit >> 6) as usize)
                    .fetch_or(1 << (bit & 63), Ordering::SeqCst);
                peers += 1;
            }
        }
        self.state_field(1).store(next, Ordering::SeqCst);
        self.state_field(0).store(1, Ordering::SeqCst);
        Ok(Some(peers))
    }
}

/// A shared mapping of a map's memory.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(map: &MapData, len: usize, name: &str) -> Result<Mapping, Error> {
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: a fresh shared mapping of the map's memory (an mmapable array, whose pages
        // the kernel keeps as long as a mapping exists); no other memory is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::Other(format!(
                "mapping {name} failed: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(Mapping {
            ptr: NonNull::new(ptr as *mut u8).expect("mmap never returns null on success"),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.len) };
    }
}

/// Reads a /proc socket table whole.
fn read_table(path: &Path) -> Result<String, Error> {
    let mut text = String::new();
    match File::open(path) {
        Ok(mut file) => file
            .read_to_string(&mut text)
            .map(|_| text)
            .map_err(|e| Error::Other(format!("reading {} failed: {e}", path.display()))),
        // No IPv6 in this kernel: no IPv6 sockets either.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(text),
        Err(e) => Err(Error::Other(format!(
            "opening {} failed: {e}",
            path.display()
        ))),
    }
}

/// The filter bits of the peers in a /proc/net/tcp or tcp6 table: every socket but listeners.
/// Addresses are printed as the hex of each native-order 32-bit word of the network-order
/// address (`%08X` of `__be32`), so each parsed word is what the kernel side loads.
pub fn peer_bits(table: &str) -> impl Iterator<Item = u32> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let mut fields = line.split_whitespace();
        let _slot = fields.next()?;
        let _local = fields.next()?;
        let remote = fields.next()?;
        let state = fields.next()?;
        // 0A: TCP_LISTEN, which has no peer.
        if state == "0A" {
            return None;
        }
        let (address, _port) = remote.split_once(':')?;
        let word = |i: usize| u32::from_str_radix(address.get(8 * i..8 * i + 8)?, 16).ok();
        match address.len() {
            8 => Some(owners::bit_of(owners::key_v4(word(0)?))),
            32 => Some(owners::bit_of(owners::key_v6([
                word(0)?,
                word(1)?,
                word(2)?,
                word(3)?,
            ]))),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_read_from_both_tables_as_the_kernel_side_keys_them() {
        // 198.18.0.2:40000 -> 198.18.0.1:80 established, a listener, an IPv6 TIME_WAIT peer
        // fd00:198:18::2, and an IPv4-mapped peer on a dual-stack socket.
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                  0: 010012C6:0050 020012C6:9C40 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0 10 0\n\
                  1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 10 0\n";
        let bits: Vec<u32> = peer_bits(v4).collect();
        assert_eq!(bits, [owners::bit_of_bytes(&[198, 18, 0, 2]).unwrap()]);

        let v6 = "  sl  local_address                         remote_address                        st\n\
                  0: 980100FD000018000000000001000000:0050 980100FD000018000000000002000000:9C40 06 0\n\
                  1: 0000000000000000FFFF00000100A8C0:0050 0000000000000000FFFF00000200A8C0:9C41 01 0\n";
        let bits: Vec<u32> = peer_bits(v6).collect();
        let peer =
            u128::from_be_bytes([0xfd, 0, 0x01, 0x98, 0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        // /proc prints each word of the address as a native-order u32.
        let printed = "980100FD000018000000000002000000";
        let word = |i: usize| u32::from_str_radix(&printed[8 * i..8 * i + 8], 16).unwrap();
        let native: Vec<u8> = (0..4).flat_map(|i| word(i).to_ne_bytes()).collect();
        assert_eq!(
            native,
            peer.to_be_bytes(),
            "how /proc/net/tcp6 prints fd00:198:18::2"
        );
        assert_eq!(bits[0], owners::bit_of_bytes(&peer.to_be_bytes()).unwrap());
        assert_eq!(bits[1], owners::bit_of_bytes(&[192, 168, 0, 2]).unwrap());
    }
}
