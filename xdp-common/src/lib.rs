//! What synguard's XDP program and its controller must agree on: map names, the layout of map
//! values, and the pure decisions of the packet path, which are unit-tested here on the host.
//!
//! Everything is `no_std` so the same code is compiled into the BPF object.
#![no_std]

pub mod classify;
pub mod stats;

pub use classify::{Class, classify_tcp_flags};
pub use stats::{Action, Stats};

/// Name of the XDP entry point in the BPF object (the `#[xdp]` function).
pub const PROGRAM_NAME: &str = "synguard";

/// Name of the per-CPU [`Stats`] map (the `#[map]` static in the BPF object).
pub const STATS_MAP: &str = "SYNGUARD_STATS";
