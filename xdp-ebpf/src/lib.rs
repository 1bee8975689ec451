//! The kernel side of synguard: one module per stage of a packet's path.
//!
//! `parse` reads the headers and classifies the packet, `count` records the class and the
//! action. The entry points live in `src/bin/`.
#![no_std]

pub mod count;
pub mod parse;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Never reached: the verifier rejects a program with a reachable panic path (an endless
    // loop), so a panic shows up as a load error, not as a hang.
    loop {}
}
