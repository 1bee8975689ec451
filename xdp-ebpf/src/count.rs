//! The last stage of every packet's path: record its class, the action taken and, for SYNs and
//! ACKs to protected ports, the reason; then return the action's XDP code. Every exit of the
//! program goes through `finish`.

use aya_ebpf::programs::XdpContext;
use synguard_common::{Action, Class, Reason};

use crate::maps::SYNGUARD_STATS;

/// What to do with a packet, and why (when there is a decision to explain).
#[derive(Clone, Copy)]
pub struct Verdict {
    pub action: Action,
    pub reason: Option<Reason>,
}

impl Verdict {
    pub const PASS: Verdict = Verdict {
        action: Action::Pass,
        reason: None,
    };

    #[inline(always)]
    pub const fn pass(reason: Reason) -> Verdict {
        Verdict {
            action: Action::Pass,
            reason: Some(reason),
        }
    }

    #[inline(always)]
    pub const fn new(action: Action, reason: Reason) -> Verdict {
        Verdict {
            action,
            reason: Some(reason),
        }
    }
}

#[inline(always)]
pub fn finish(ctx: &XdpContext, class: Class, verdict: Verdict) -> u32 {
    // Slot 0 of a one-slot array always exists, so the lookup cannot miss. If it ever did,
    // losing a count is better than changing what happens to the packet.
    if let Some(stats) = SYNGUARD_STATS.get_ptr_mut(0) {
        // After a SYN-ACK rewrite this is the reply's length: what was transmitted.
        let len = (ctx.data_end() - ctx.data()) as u64;
        // SAFETY: per-CPU slot, and XDP runs with preemption disabled, so no one else writes it.
        unsafe {
            (*stats).record(class, verdict.action, len);
            if let Some(reason) = verdict.reason {
                (*stats).record_reason(reason);
            }
        }
    }
    verdict.action.xdp_code()
}
