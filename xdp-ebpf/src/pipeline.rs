//! A packet's whole path through synguard, in order: `parse` reads and classifies it, `policy`
//! decides (lists, mode, ports, `auto`, the per-source limit; `cookie` answers SYNs, `ack`
//! checks ACKs), `cookie::send` writes an answered SYN's reply, and `count` records the
//! outcome and returns the XDP action.

use aya_ebpf::programs::XdpContext;

use crate::{
    cookie, count, parse,
    policy::{self, Decision},
};

#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    let packet = parse::parse(ctx);
    let verdict = match policy::decide(ctx, &packet) {
        Decision::Verdict(verdict) => verdict,
        Decision::Answer(answer) => cookie::send(ctx, &answer),
    };
    count::finish(ctx, packet.class, verdict)
}
