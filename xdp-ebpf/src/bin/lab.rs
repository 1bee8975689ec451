//! XDP programs for the test lab, never loaded by the controller.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
// Links the panic handler.
use synguard_ebpf as _;

/// Attached to the client end of the lab's veth pair. On veth, a frame sent with XDP_TX is only
/// delivered if the peer runs an XDP program too (../shared/LAB.md; the kernel's xdp_synproxy
/// selftest does the same).
#[xdp]
pub fn lab_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
