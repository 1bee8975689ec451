//! The kernel side of synguard: one module per stage of a packet's path.
//!
//! `parse` reads the headers and classifies the packet; `policy` decides what applies to it
//! (mode, protected ports, `auto`'s rate switch); `cookie` answers SYNs and `ack` checks ACKs,
//! both asking `sock` about the kernel's sockets; `count` records the outcome. The entry
//! points live in `src/bin/`.
#![no_std]

pub mod ack;
pub mod auto;
pub mod cookie;
pub mod count;
pub mod parse;
pub mod policy;
pub mod sock;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Never reached: the verifier rejects a program with a reachable panic path (an endless
    // loop), so a panic shows up as a load error, not as a hang.
    loop {}
}
