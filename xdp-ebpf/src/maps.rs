//! Every map of synguard's XDP program, each defined once. A map's name in the object is its
//! static's name; `synguard_common::MAP_NAMES` lists the same names for the controller, the pins
//! and the tests, and xdp-user's `objects::tests` checks the built object against that list.
//!
//! Both objects that run the pipeline (the product, and the benchmark's copy in `bin/lab.rs`)
//! link these statics, so each gets its own maps with the same names.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use synguard_common::{
    AttackState, AutoState, Config, LIST_MAX_ENTRIES, LISTENER_SLOTS, LOCAL_ADDRESS_SLOTS,
    PORTS_WORDS, ROUTE_TABLE_ENTRIES, SOURCE_BUCKETS, STAMP_SLOTS, Stats,
    config::{CapState, SourceSamples, cap},
    dump::{DUMP_RING_BYTES, DumpConfig, DumpFrame},
    established::{self, KnownConnection},
    handshakes::{Handshakes, PORT_ROWS_ENTRIES, ROWS},
    limit::{SKETCH_CELLS, SourceKey},
    owners::{OwnerBits, OwnersState},
    promise::{HostFacts, KernelLayout, ROUTE_CLASSES, RouteFacts},
};

use crate::{
    cookie::{StampSlot, Stamped},
    listener::ListenerSlot,
    scratch::Scratch,
};

// What the controller writes.

/// The run-time configuration: mode, limits, thresholds, flags.
#[map]
pub static SYNGUARD_CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// A bitmap of protected ports, 64 to a word.
#[map]
pub static SYNGUARD_PORTS: Array<u64> = Array::with_max_entries(PORTS_WORDS, 0);

/// Each port's row of handshake counters (0: `other`), and each row's port (`handshakes.rs`).
#[map]
pub static SYNGUARD_PORT_ROWS: Array<u8> = Array::with_max_entries(PORT_ROWS_ENTRIES, 0);
#[map]
pub static SYNGUARD_ROW_PORTS: Array<u16> = Array::with_max_entries(ROWS as u32, 0);

/// The allow and deny lists, by source prefix (`lists.rs`).
#[map]
pub static SYNGUARD_LIST_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(LIST_MAX_ENTRIES, 0);
#[map]
pub static SYNGUARD_LIST_V6: LpmTrie<[u8; 16], u32> =
    LpmTrie::with_max_entries(LIST_MAX_ENTRIES, 0);

/// Where the kernel keeps the listener fields a SYN-ACK depends on, from its BTF.
#[map]
pub static SYNGUARD_LAYOUT: Array<KernelLayout> = Array::with_max_entries(1, 0);
/// The host's facts (sysctls, MTU, routes) and their generation.
#[map]
pub static SYNGUARD_HOST: Array<HostFacts> = Array::with_max_entries(1, 0);
/// Per-client route classes, when the routes out of the interface differ (`listener.rs`).
#[map]
pub static SYNGUARD_ROUTES_V4: LpmTrie<[u8; 4], u32> =
    LpmTrie::with_max_entries(ROUTE_TABLE_ENTRIES, 0);
#[map]
pub static SYNGUARD_ROUTES_V6: LpmTrie<[u8; 16], u32> =
    LpmTrie::with_max_entries(ROUTE_TABLE_ENTRIES, 0);
#[map]
pub static SYNGUARD_ROUTE_CLASSES: Array<RouteFacts> =
    Array::with_max_entries(2 * ROUTE_CLASSES, 0);
/// The host's unicast addresses, from its local routing table (`local.rs`).
#[map]
pub static SYNGUARD_LOCAL_V4: HashMap<[u8; 4], u8> =
    HashMap::with_max_entries(LOCAL_ADDRESS_SLOTS, 0);
#[map]
pub static SYNGUARD_LOCAL_V6: HashMap<[u8; 16], u8> =
    HashMap::with_max_entries(LOCAL_ADDRESS_SLOTS, 0);

// What the program keeps, and the controller reads.

/// Per-CPU counters by class, action and reason.
#[map]
pub static SYNGUARD_STATS: PerCpuArray<Stats> = PerCpuArray::with_max_entries(1, 0);

/// `auto` mode's per-CPU SYN rates (`auto.rs`).
#[map]
pub static SYNGUARD_AUTO: PerCpuArray<AutoState> = PerCpuArray::with_max_entries(1, 0);
/// The attack state all CPUs share.
#[map]
pub static SYNGUARD_ATTACK: Array<AttackState> = Array::with_max_entries(1, 0);
/// Attack start and stop events for the controller.
#[map]
pub static SYNGUARD_EVENTS: RingBuf = RingBuf::with_byte_size(4096, 0);
/// SYN counts per destination port, for `auto`'s per-port threshold.
#[map]
pub static SYNGUARD_PORT_RATES: Array<u64> = Array::with_max_entries(65_536, 0);
/// Sources sampled during an attack, for the controller's log.
#[map]
pub static SYNGUARD_SAMPLES: PerCpuArray<SourceSamples> = PerCpuArray::with_max_entries(1, 0);

/// Each CPU's share of the global caps (`caps.rs`).
#[map]
pub static SYNGUARD_CAPS: PerCpuArray<CapState> = PerCpuArray::with_max_entries(cap::COUNT, 0);

/// The per-source limit's count-min sketch and its exact buckets (`limit.rs`).
#[map]
pub static SYNGUARD_SKETCH: Array<u64> = Array::with_max_entries(SKETCH_CELLS, 0);
#[map]
pub static SYNGUARD_SOURCES: LruHashMap<SourceKey, u64> =
    LruHashMap::with_max_entries(SOURCE_BUCKETS, 0);

// The program's own per-CPU memory.

/// When each CPU last stamped a destination's listener (`cookie.rs`).
#[map]
pub static SYNGUARD_STAMPS: PerCpuArray<StampSlot> = PerCpuArray::with_max_entries(STAMP_SLOTS, 0);
/// Each CPU's cache of what it read of each listener (`listener.rs`).
#[map]
pub static SYNGUARD_LISTENERS: PerCpuArray<ListenerSlot> =
    PerCpuArray::with_max_entries(LISTENER_SLOTS, 0);
/// The listener each stamp slot's destination had when last looked up (`cookie.rs`).
#[map]
pub static SYNGUARD_STAMPED: PerCpuArray<Stamped> = PerCpuArray::with_max_entries(STAMP_SLOTS, 0);

/// The connections each CPU found established (`established.rs`).
#[map]
pub static SYNGUARD_ESTABLISHED: PerCpuArray<KnownConnection> =
    PerCpuArray::with_max_entries(established::SLOTS, 0);

// The filter of sources that may own a socket (`owners.rs`), written by the program, its
// tracing program and the controller.

/// Two generations of the filter. Both are mapped into the controller, which sets bits with
/// the same atomic OR as the program.
#[map]
pub static SYNGUARD_OWNERS: Array<OwnerBits> = Array::with_max_entries(2, BPF_F_MMAPABLE);
/// Which generation is read, whether the fast path is armed, the listener epoch.
#[map]
pub static SYNGUARD_OWNERS_STATE: Array<OwnersState> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// `synguard dump` (`dump.rs`): what to capture, each CPU's budget of records, the frame a
/// CPU kept as it arrived, and the records.
#[map]
pub static SYNGUARD_DUMP_CONFIG: Array<DumpConfig> = Array::with_max_entries(1, 0);
#[map]
pub static SYNGUARD_DUMP_BUDGET: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static SYNGUARD_DUMP_FRAME: PerCpuArray<DumpFrame> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static SYNGUARD_DUMP: RingBuf = RingBuf::with_byte_size(DUMP_RING_BYTES, 0);

/// SYN-ACKs sent and cookies completed, per port row (`handshakes.rs`).
#[map]
pub static SYNGUARD_HANDSHAKES: PerCpuArray<Handshakes> = PerCpuArray::with_max_entries(1, 0);

/// Scratch space for the SYN and ACK paths (`scratch.rs`).
#[map]
pub static SYNGUARD_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);
