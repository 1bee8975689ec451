//! What BPF makes the stages do differently from plain Rust: atomics as inline assembly, word
//! copies instead of `memcpy`, per-CPU walks as `bpf_loop` callbacks. Kept apart so that the
//! stage modules read as the packet's path.

pub mod atomic;
pub mod mem;
pub mod percpu;
