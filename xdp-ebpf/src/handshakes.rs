//! Handshakes per port (`synguard_common::handshakes`): after the decision, a SYN-ACK sent
//! from XDP or an ACK with a valid cookie is counted on its port's row. The port is the one
//! the SYN or ACK path read into scratch memory for its decision.

use synguard_common::{Action, Reason};

use crate::{
    count::Outcome,
    maps::{SYNGUARD_HANDSHAKES, SYNGUARD_PORT_ROWS},
    scratch::Scratch,
};

#[inline(always)]
pub fn count(outcome: Outcome, scratch: &Scratch) {
    let reason = outcome.reason();
    let completed = reason == Reason::AckCookieValid as usize;
    let answered = outcome.action() == Action::Tx as usize
        && (reason == Reason::CookieRaw as usize
            || reason == Reason::CookieStamped as usize
            || reason == Reason::CookieNoLookup as usize);
    if !(answered || completed) {
        return;
    }
    let port = u16::from_be_bytes(scratch.ends.dst_port);
    let row = SYNGUARD_PORT_ROWS
        .get(u32::from(port))
        .copied()
        .unwrap_or(0);
    if let Some(handshakes) = SYNGUARD_HANDSHAKES.get_ptr_mut(0) {
        // SAFETY: this CPU's own slot; XDP runs with preemption disabled.
        unsafe { (*handshakes).record(usize::from(row), completed) };
    }
}
