//! The BPF objects, built by `build.rs` and embedded in the binary.

/// The XDP program synguard attaches.
pub static SYNGUARD: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/synguard.bpf.o"));

/// Helper programs for the test lab and benchmarks (`lab_pass`). The `synguard` binary does not
/// use them, so the linker leaves them out of it.
pub static LAB: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lab.bpf.o"));
