//! The last stage of every packet's path: record its class, the action taken and, for SYNs and
//! ACKs to protected ports, the reason; then return the action's XDP code. Every exit of the
//! program goes through `finish`.

use aya_ebpf::programs::XdpContext;
use synguard_common::{Action, Reason};

use crate::{
    bpf::mem::opaque,
    maps::SYNGUARD_STATS,
    parse::{IpAt, MAX_L3, Packet},
};

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

/// A packet's class, the action taken, its reason and where its IP header is, packed in one
/// word for the last stages. The word goes through map memory ([`opaque`]) before them: every
/// way through the program ends with its own constants for these, and without the round trip
/// the verifier walked the last stages once for each way, tens of thousands of instructions.
#[derive(Clone, Copy)]
pub struct Outcome(u64);

const NO_REASON: u64 = 0x3f;

impl Outcome {
    #[inline(always)]
    pub fn new(packet: &Packet, verdict: Verdict) -> Outcome {
        let reason = match verdict.reason {
            Some(reason) => reason as u64,
            None => NO_REASON,
        };
        let ip = match packet.ip {
            Some(ip) => 1 << 12 | u64::from(ip.ipv6) << 13 | (ip.l3 as u64 & MAX_L3) << 16,
            None => 0,
        };
        Outcome(packet.class as u64 | (verdict.action as u64) << 4 | reason << 6 | ip)
    }

    /// The same outcome, read back from `cell` (map memory): bounded numbers to the verifier.
    #[inline(always)]
    pub fn opaque(self, cell: &mut u64) -> Outcome {
        Outcome(opaque(cell, self.0))
    }

    #[inline(always)]
    pub fn class(self) -> usize {
        (self.0 & 0xf) as usize
    }

    #[inline(always)]
    pub fn action(self) -> usize {
        ((self.0 >> 4) & 0x3) as usize
    }

    #[inline(always)]
    pub fn passed(self) -> bool {
        self.action() == Action::Pass as usize
    }

    /// The reason's index, `Reason::COUNT` or more for none.
    #[inline(always)]
    pub fn reason(self) -> usize {
        ((self.0 >> 6) & NO_REASON) as usize
    }

    #[inline(always)]
    pub fn ip(self) -> Option<IpAt> {
        (self.0 & 1 << 12 != 0).then_some(IpAt {
            l3: ((self.0 >> 16) & MAX_L3) as usize,
            ipv6: self.0 & 1 << 13 != 0,
        })
    }
}

/// Records the outcome and returns its XDP code.
#[inline(always)]
pub fn finish(ctx: &XdpContext, outcome: Outcome) -> u32 {
    // Slot 0 of a one-slot array always exists, so the lookup cannot miss. If it ever did,
    // losing a count is better than changing what happens to the packet.
    if let Some(stats) = SYNGUARD_STATS.get_ptr_mut(0) {
        // After a SYN-ACK rewrite this is the reply's length: what was transmitted.
        let len = (ctx.data_end() - ctx.data()) as u64;
        // SAFETY: per-CPU slot, and XDP runs with preemption disabled, so no one else writes it.
        unsafe { (*stats).record_at(outcome.class(), outcome.action(), outcome.reason(), len) };
    }
    // By `Action`'s values: Pass, Drop, Tx, Aborted.
    const CODES: [u32; Action::COUNT] = [
        Action::Pass.xdp_code(),
        Action::Drop.xdp_code(),
        Action::Tx.xdp_code(),
        Action::Aborted.xdp_code(),
    ];
    CODES[outcome.action() & (Action::COUNT - 1)]
}
