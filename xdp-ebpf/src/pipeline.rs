//! A packet's whole path through synguard, in order: `parse` reads and classifies it, `dump`
//! keeps a copy of it if a dump wants one, `policy` decides (lists, mode, ports, `auto`, the
//! per-source limit; `cookie` answers SYNs, `ack` checks ACKs), `cookie::send` writes an
//! answered SYN's reply, `owners` notes the source of what is handed to the kernel,
//! `handshakes` counts SYN-ACKs and completed cookies per port, `dump` writes the kept copy
//! with the outcome, and `count` records the outcome and returns the XDP action.

use aya_ebpf::programs::XdpContext;

use crate::{
    cookie,
    count::{self, Outcome, Verdict},
    dump, handshakes,
    maps::SYNGUARD_SCRATCH,
    owners, parse,
    policy::{self, Decision},
};

#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    let packet = parse::parse(ctx);
    dump::keep(ctx, &packet);
    let verdict = match policy::decide(ctx, &packet) {
        Decision::Verdict(verdict) => verdict,
        Decision::Answer(answer) => cookie::send(ctx, &answer),
    };
    conclude(ctx, Outcome::new(&packet, verdict))
}

/// The last stages, the same for every way through the program: note the source of what the
/// kernel gets, count, return the code.
#[inline(always)]
pub fn conclude(ctx: &XdpContext, outcome: Outcome) -> u32 {
    let Some(scratch) = SYNGUARD_SCRATCH.get_ptr_mut(0) else {
        return Verdict::PASS.action.xdp_code();
    };
    // SAFETY: this CPU's own slot; XDP runs with preemption disabled.
    let outcome = outcome.opaque(unsafe { &mut (*scratch).outcome });
    owners::note_if_handed_over(ctx, outcome);
    // SAFETY: as above.
    handshakes::count(outcome, unsafe { &*scratch });
    dump::write(ctx, outcome);
    count::finish(ctx, outcome)
}
