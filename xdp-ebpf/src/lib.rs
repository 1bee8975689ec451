//! The kernel side of synguard: one module per stage of a packet's path, run in order by
//! `pipeline::run`.
//!
//! `parse` reads the headers and classifies the packet; `policy` decides what applies to it
//! (allow/deny `lists`, mode, protected ports, `auto`'s rate switch, the per-source `limit`, the
//! global `caps`); `cookie` answers SYNs (with what `listener` says the kernel would promise)
//! and `ack` checks ACKs (remembering in `established` the connections it found), both asking
//! `sock` about the kernel's sockets, `owners` whether the source may own one, and `local`
//! whether the segment is for this host at all; `handshakes` counts SYN-ACKs and completed cookies per port;
//! `count` records the outcome; `dump` captures for `synguard dump`. Every map is in `maps`;
//! `scratch` is the per-CPU memory the SYN and ACK paths work in; `bpf` holds what the BPF
//! target and the verifier make us write differently. The entry points live in `src/bin/`.
#![no_std]
// Inline assembly for the atomic instructions (`bpf::atomic`); aya-ebpf needs the same feature.
#![feature(asm_experimental_arch)]

pub mod ack;
pub mod auto;
pub mod bpf;
pub mod caps;
pub mod cookie;
pub mod count;
pub mod dump;
pub mod established;
pub mod handshakes;
pub mod limit;
pub mod listener;
pub mod lists;
pub mod local;
pub mod maps;
pub mod owners;
pub mod parse;
pub mod pipeline;
pub mod policy;
pub mod scratch;
pub mod sock;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Never reached: the verifier rejects a program with a reachable panic path (an endless
    // loop), so a panic shows up as a load error, not as a hang.
    loop {}
}
