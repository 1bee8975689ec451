//! The kernel side of synguard: one module per stage of a packet's path.
//!
//! `parse` reads the headers and classifies the packet; `policy` decides what applies to it
//! (allow/deny `lists`, mode, protected ports, `auto`'s rate switch, the per-source `limit`);
//! `cookie` answers SYNs and
//! `ack` checks ACKs,
//! both asking `sock` about the kernel's sockets; `count` records the outcome. The entry
//! points live in `src/bin/`.
#![no_std]
// Inline assembly for the atomic instructions (`atomic`); aya-ebpf needs the same feature.
#![feature(asm_experimental_arch)]

pub mod ack;
pub mod atomic;
pub mod auto;
pub mod caps;
pub mod cookie;
pub mod count;
pub mod limit;
pub mod listener;
pub mod lists;
pub mod mem;
pub mod parse;
pub mod percpu;
pub mod policy;
pub mod sock;

/// Defines synguard's maps and an XDP entry point `$name` running the whole pipeline:
/// parse -> policy (cookie / ack) -> count. The product (`src/bin/synguard.rs`) and the
/// benchmark's copy (`src/bin/lab.rs`, `$rewrite` false: answered SYNs are not rewritten, see
/// `cookie::answer_syn`) are the same code, each with its own maps, named as
/// `synguard_common`'s constants say.
#[macro_export]
macro_rules! synguard_program {
    ($name:ident, rewrite: $rewrite:expr) => {
        /// Per-CPU counters (`synguard_common::STATS_MAP`).
        #[aya_ebpf::macros::map]
        static SYNGUARD_STATS: aya_ebpf::maps::PerCpuArray<synguard_common::Stats> =
            aya_ebpf::maps::PerCpuArray::with_max_entries(1, 0);

        /// The run-time configuration, written by the controller (`CONFIG_MAP`).
        #[aya_ebpf::macros::map]
        static SYNGUARD_CONFIG: aya_ebpf::maps::Array<synguard_common::Config> =
            aya_ebpf::maps::Array::with_max_entries(1, 0);

        /// A bitmap of protected ports (`PORTS_MAP`).
        #[aya_ebpf::macros::map]
        static SYNGUARD_PORTS: aya_ebpf::maps::Array<u64> =
            aya_ebpf::maps::Array::with_max_entries(synguard_common::PORTS_WORDS, 0);

        /// `auto` mode's per-CPU rates (`AUTO_STATE_MAP`), the attack state all CPUs share
        /// (`ATTACK_MAP`), its events for the controller (`EVENTS_MAP`), sampled sources
        /// (`SAMPLES_MAP`) and per-port SYN counts (`PORT_RATES_MAP`); see `auto.rs`.
        #[aya_ebpf::macros::map]
        static SYNGUARD_AUTO: aya_ebpf::maps::PerCpuArray<synguard_common::AutoState> =
            aya_ebpf::maps::PerCpuArray::with_max_entries(1, 0);
        #[aya_ebpf::macros::map]
        static SYNGUARD_ATTACK: aya_ebpf::maps::Array<synguard_common::AttackState> =
            aya_ebpf::maps::Array::with_max_entries(1, 0);
        #[aya_ebpf::macros::map]
        static SYNGUARD_EVENTS: aya_ebpf::maps::RingBuf =
            aya_ebpf::maps::RingBuf::with_byte_size(4096, 0);
        #[aya_ebpf::macros::map]
        static SYNGUARD_PORT_RATES: aya_ebpf::maps::Array<u64> =
            aya_ebpf::maps::Array::with_max_entries(65_536, 0);
        #[aya_ebpf::macros::map]
        static SYNGUARD_SAMPLES: aya_ebpf::maps::PerCpuArray<
            synguard_common::config::SourceSamples,
        > = aya_ebpf::maps::PerCpuArray::with_max_entries(1, 0);

        /// When each CPU last stamped a destination's listener (`STAMPS_MAP`, see
        /// `cookie.rs`).
        #[aya_ebpf::macros::map]
        static SYNGUARD_STAMPS: aya_ebpf::maps::PerCpuArray<$crate::cookie::StampSlot> =
            aya_ebpf::maps::PerCpuArray::with_max_entries(synguard_common::STAMP_SLOTS, 0);

        /// Where the kernel keeps the listener fields a SYN-ACK depends on (`LAYOUT_MAP`),
        /// the host's facts (`HOST_MAP`) and per-client routes (`ROUTES_V4_MAP`,
        /// `ROUTES_V6_MAP`, `ROUTE_CLASSES_MAP`), all written by the controller, and each
        /// CPU's cache of what it read of each listener (`LISTENERS_MAP`, see `listener.rs`).
        #[aya_ebpf::macros::map]
        static SYNGUARD_LAYOUT: aya_ebpf::maps::Array<synguard_common::promise::KernelLayout> =
            aya_ebpf::maps::Array::with_max_entries(1, 0);
        #[aya_ebpf::macros::map]
        static SYNGUARD_HOST: aya_ebpf::maps::Array<synguard_common::promise::HostFacts> =
            aya_ebpf::maps::Array::with_max_entries(1, 0);
        #[aya_ebpf::macros::map]
        static SYNGUARD_ROUTES_V4: aya_ebpf::maps::LpmTrie<[u8; 4], u32> =
            aya_ebpf::maps::LpmTrie::with_max_entries(synguard_common::ROUTE_TABLE_ENTRIES, 0);
        #[aya_ebpf::macros::map]
        static SYNGUARD_ROUTES_V6: aya_ebpf::maps::LpmTrie<[u8; 16], u32> =
            aya_ebpf::maps::LpmTrie::with_max_entries(synguard_common::ROUTE_TABLE_ENTRIES, 0);
        #[aya_ebpf::macros::map]
        static SYNGUARD_ROUTE_CLASSES: aya_ebpf::maps::Array<synguard_common::promise::RouteFacts> =
            aya_ebpf::maps::Array::with_max_entries(2 * synguard_common::promise::ROUTE_CLASSES, 0);
        #[aya_ebpf::macros::map]
        static SYNGUARD_LISTENERS: aya_ebpf::maps::PerCpuArray<$crate::listener::ListenerSlot> =
            aya_ebpf::maps::PerCpuArray::with_max_entries(synguard_common::LISTENER_SLOTS, 0);

        /// Each CPU's share of the global caps (`CAPS_MAP`, see `caps.rs`).
        #[aya_ebpf::macros::map]
        static SYNGUARD_CAPS: aya_ebpf::maps::PerCpuArray<synguard_common::config::CapState> =
            aya_ebpf::maps::PerCpuArray::with_max_entries(synguard_common::config::cap::COUNT, 0);

        /// The allow/deny lists (`LIST_V4_MAP`, `LIST_V6_MAP`).
        #[aya_ebpf::macros::map]
        static SYNGUARD_LIST_V4: aya_ebpf::maps::LpmTrie<[u8; 4], u32> =
            aya_ebpf::maps::LpmTrie::with_max_entries(synguard_common::LIST_MAX_ENTRIES, 0);
        #[aya_ebpf::macros::map]
        static SYNGUARD_LIST_V6: aya_ebpf::maps::LpmTrie<[u8; 16], u32> =
            aya_ebpf::maps::LpmTrie::with_max_entries(synguard_common::LIST_MAX_ENTRIES, 0);

        /// The per-source limit's sketch and buckets (`SKETCH_MAP`, `SOURCES_MAP`, see
        /// `limit.rs`).
        #[aya_ebpf::macros::map]
        static SYNGUARD_SKETCH: aya_ebpf::maps::Array<u64> =
            aya_ebpf::maps::Array::with_max_entries(synguard_common::limit::SKETCH_CELLS, 0);
        #[aya_ebpf::macros::map]
        static SYNGUARD_SOURCES: aya_ebpf::maps::LruHashMap<
            synguard_common::limit::SourceKey,
            u64,
        > = aya_ebpf::maps::LruHashMap::with_max_entries(synguard_common::SOURCE_BUCKETS, 0);

        /// Scratch space for the SYN and ACK paths (`cookie::Scratch`).
        #[aya_ebpf::macros::map]
        static SYNGUARD_SCRATCH: aya_ebpf::maps::PerCpuArray<$crate::cookie::Scratch> =
            aya_ebpf::maps::PerCpuArray::with_max_entries(1, 0);

        #[aya_ebpf::macros::xdp]
        pub fn $name(ctx: aya_ebpf::programs::XdpContext) -> u32 {
            let packet = $crate::parse::parse(&ctx);
            let maps = $crate::policy::Maps {
                config: &SYNGUARD_CONFIG,
                ports: &SYNGUARD_PORTS,
                auto: $crate::auto::AutoMaps {
                    states: &SYNGUARD_AUTO,
                    attack: &SYNGUARD_ATTACK,
                    events: &SYNGUARD_EVENTS,
                    samples: &SYNGUARD_SAMPLES,
                    port_rates: &SYNGUARD_PORT_RATES,
                },
                syn: $crate::cookie::SynMaps {
                    stamps: &SYNGUARD_STAMPS,
                    caps: &SYNGUARD_CAPS,
                    listeners: $crate::listener::ListenerMaps {
                        layout: &SYNGUARD_LAYOUT,
                        host: &SYNGUARD_HOST,
                        routes_v4: &SYNGUARD_ROUTES_V4,
                        routes_v6: &SYNGUARD_ROUTES_V6,
                        route_classes: &SYNGUARD_ROUTE_CLASSES,
                        slots: &SYNGUARD_LISTENERS,
                    },
                },
                scratch: &SYNGUARD_SCRATCH,
                list_v4: &SYNGUARD_LIST_V4,
                list_v6: &SYNGUARD_LIST_V6,
                caps: &SYNGUARD_CAPS,
                limit: $crate::limit::LimitMaps {
                    sketch: &SYNGUARD_SKETCH,
                    buckets: &SYNGUARD_SOURCES,
                    stats: &SYNGUARD_STATS,
                },
            };
            let verdict = $crate::policy::decide(&ctx, &packet, &maps, $rewrite);
            $crate::count::finish(&SYNGUARD_STATS, &ctx, packet.class, verdict)
        }
    };
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Never reached: the verifier rejects a program with a reachable panic path (an endless
    // loop), so a panic shows up as a load error, not as a hang.
    loop {}
}
