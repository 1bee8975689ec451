//! What synguard's XDP program and its controller must agree on: map names, the layout of map
//! values, and the pure decisions of the packet path, which are unit-tested here on the host.
//!
//! Everything is `no_std` so the same code is compiled into the BPF object.
#![no_std]

pub mod checksum;
pub mod classify;
pub mod config;
pub mod dump;
pub mod established;
pub mod handshakes;
pub mod limit;
pub mod owners;
pub mod promise;
pub mod stats;
pub mod tcp;

pub use classify::{Class, classify_tcp_flags};
pub use config::{AttackEvent, AttackState, AutoState, Config, Mode};
pub use stats::{Action, Reason, Stats};

/// Name of the XDP entry point in the BPF object (the `#[xdp]` function).
pub const PROGRAM_NAME: &str = "synguard";

/// Name of the per-CPU [`Stats`] map. Each name here is a `#[map]` static's name in
/// `xdp-ebpf/src/maps.rs`.
pub const STATS_MAP: &str = "SYNGUARD_STATS";

/// Name of the one-slot array holding the [`Config`].
pub const CONFIG_MAP: &str = "SYNGUARD_CONFIG";

/// Name of the array of protected ports: 1024 `u64` words, one bit per port.
pub const PORTS_MAP: &str = "SYNGUARD_PORTS";
pub const PORTS_WORDS: u32 = 65536 / 64;

/// Name of the one-slot per-CPU array holding `Auto` mode's [`AutoState`].
pub const AUTO_STATE_MAP: &str = "SYNGUARD_AUTO";

/// Name of the per-CPU array of [`config::CapState`], one per global cap.
pub const CAPS_MAP: &str = "SYNGUARD_CAPS";

/// Names of the allow/deny lists: LPM tries keyed by source prefix, one per family, whose
/// value is a [`config::list`] verdict. The longest matching prefix decides, whichever list
/// it came from.
pub const LIST_V4_MAP: &str = "SYNGUARD_LIST_V4";
pub const LIST_V6_MAP: &str = "SYNGUARD_LIST_V6";
pub const LIST_MAX_ENTRIES: u32 = 65_536;

/// Name of the per-CPU array recording when each (address, port) a SYN was answered for
/// last had its listener's overflow time stamped; see `xdp-ebpf/src/cookie.rs`.
pub const STAMPS_MAP: &str = "SYNGUARD_STAMPS";
/// Slots per CPU in the stamp table: a per-CPU array of 32-byte slots, direct-mapped by a
/// hash of the destination (`xdp-ebpf/src/cookie.rs`, `StampSlot`).
pub const STAMP_SLOTS: u32 = 256;

/// Name of the count-min sketch of recent SYNs per source (`limit`): an array of
/// `limit::SKETCH_CELLS` u64 cells.
pub const SKETCH_MAP: &str = "SYNGUARD_SKETCH";

/// Name of the LRU hash of per-source buckets (`limit::SourceKey` to a GCRA arrival time),
/// holding at most `SOURCE_BUCKETS` sources that earned one.
pub const SOURCES_MAP: &str = "SYNGUARD_SOURCES";
pub const SOURCE_BUCKETS: u32 = 65_536;

/// Name of the one-slot array holding the [`AttackState`].
pub const ATTACK_MAP: &str = "SYNGUARD_ATTACK";

/// Name of the ring buffer of [`AttackEvent`]s: one per attack start or end, never per packet.
pub const EVENTS_MAP: &str = "SYNGUARD_EVENTS";

/// Name of the per-CPU ring of sampled SYN sources ([`config::SourceSamples`]), written during
/// an attack.
pub const SAMPLES_MAP: &str = "SYNGUARD_SAMPLES";

/// Name of the array of per-port SYN counts for `auto`'s per-port threshold: one cell per
/// port, packing the window and the count (`config::PORT_WINDOW_NS`).
pub const PORT_RATES_MAP: &str = "SYNGUARD_PORT_RATES";

/// Name of the one-slot array holding the [`promise::KernelLayout`]: where the running kernel
/// keeps the listener fields a SYN-ACK depends on, resolved from its BTF by the controller.
pub const LAYOUT_MAP: &str = "SYNGUARD_LAYOUT";

/// Name of the one-slot array holding the [`promise::HostFacts`], polled by the controller.
pub const HOST_MAP: &str = "SYNGUARD_HOST";

/// Name of the per-CPU array caching each listener's [`promise::Promise`]
/// (`xdp-ebpf/src/listener.rs`), `LISTENER_SLOTS` slots per CPU.
pub const LISTENERS_MAP: &str = "SYNGUARD_LISTENERS";
pub const LISTENER_SLOTS: u32 = 64;

/// Names of the per-client route tables, used when routes out of the interface differ
/// ([`promise::route::PER_CLIENT`]): LPM tries keyed by destination prefix whose value is a
/// route class, and the array of classes' facts (IPv4's first, then IPv6's).
pub const ROUTES_V4_MAP: &str = "SYNGUARD_ROUTES_V4";
pub const ROUTES_V6_MAP: &str = "SYNGUARD_ROUTES_V6";
pub const ROUTE_CLASSES_MAP: &str = "SYNGUARD_ROUTE_CLASSES";
pub const ROUTE_TABLE_ENTRIES: u32 = 4096;

/// The host's own unicast addresses, by family (`xdp-ebpf/src/local.rs`): only segments to
/// one of them are judged. Filled from the kernel's local routing table.
pub const LOCAL_V4_MAP: &str = "SYNGUARD_LOCAL_V4";
pub const LOCAL_V6_MAP: &str = "SYNGUARD_LOCAL_V6";
pub const LOCAL_ADDRESS_SLOTS: u32 = 4096;

/// Names of the filter of sources that may own a socket (`owners`): two generations of
/// [`owners::OwnerBits`], the one-slot [`owners::OwnersState`], and the per-CPU table of the
/// listener each stamp slot's destination was last found to have (`xdp-ebpf/src/cookie.rs`,
/// `Stamped`), `STAMP_SLOTS` per CPU. None is pinned: a new program starts disarmed, and the
/// controller arms it once the filter is built.
pub const OWNERS_MAP: &str = "SYNGUARD_OWNERS";
pub const OWNERS_STATE_MAP: &str = "SYNGUARD_OWNERS_STATE";
pub const STAMPED_MAP: &str = "SYNGUARD_STAMPED";

/// Names of the tracing programs that keep the filter: one on the `inet_sock_set_state`
/// tracepoint, one at the entry of inet_csk_reqsk_queue_hash_add() for request sockets.
pub const TRACE_PROGRAM_NAME: &str = "synguard_sockets";
pub const REQUEST_PROGRAM_NAME: &str = "synguard_requests";
/// The kernel function the second one is attached to.
pub const REQUEST_FUNCTION: &str = "inet_csk_reqsk_queue_hash_add";

/// Name of the per-CPU scratch memory of the SYN and ACK paths (`xdp-ebpf/src/scratch.rs`).
pub const SCRATCH_MAP: &str = "SYNGUARD_SCRATCH";

/// Every map the XDP program defines (`xdp-ebpf/src/maps.rs`), by the names above: the one
/// list the controller's pins and the check against the built object work from.
pub const MAP_NAMES: [&str; 34] = [
    CONFIG_MAP,
    PORTS_MAP,
    LIST_V4_MAP,
    LIST_V6_MAP,
    LAYOUT_MAP,
    HOST_MAP,
    ROUTES_V4_MAP,
    ROUTES_V6_MAP,
    ROUTE_CLASSES_MAP,
    LOCAL_V4_MAP,
    LOCAL_V6_MAP,
    STATS_MAP,
    AUTO_STATE_MAP,
    ATTACK_MAP,
    EVENTS_MAP,
    PORT_RATES_MAP,
    SAMPLES_MAP,
    CAPS_MAP,
    SKETCH_MAP,
    SOURCES_MAP,
    STAMPS_MAP,
    LISTENERS_MAP,
    SCRATCH_MAP,
    OWNERS_MAP,
    OWNERS_STATE_MAP,
    STAMPED_MAP,
    established::ESTABLISHED_MAP,
    handshakes::PORT_ROWS_MAP,
    handshakes::ROW_PORTS_MAP,
    handshakes::HANDSHAKES_MAP,
    dump::DUMP_CONFIG_MAP,
    dump::DUMP_BUDGET_MAP,
    dump::DUMP_FRAME_MAP,
    dump::DUMP_RING_MAP,
];

/// The maps that carry state across a restart, pinned in the BPF filesystem. The rest hold
/// facts the controller gathers afresh at every start (the listener layout, the host's facts
/// and routes, its local addresses) or a cache of them (the per-CPU listener table).
pub const PINNED_MAPS: [&str; 17] = [
    STATS_MAP,
    CONFIG_MAP,
    PORTS_MAP,
    AUTO_STATE_MAP,
    ATTACK_MAP,
    EVENTS_MAP,
    SAMPLES_MAP,
    PORT_RATES_MAP,
    STAMPS_MAP,
    CAPS_MAP,
    LIST_V4_MAP,
    LIST_V6_MAP,
    SKETCH_MAP,
    SOURCES_MAP,
    handshakes::PORT_ROWS_MAP,
    handshakes::ROW_PORTS_MAP,
    handshakes::HANDSHAKES_MAP,
];
