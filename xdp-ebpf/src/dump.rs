//! `synguard dump`, inside the program (`synguard_common::dump`): [`keep`] runs after `parse`
//! and copies the frame as it arrived, when a dump runs, the CPU has budget left and the frame
//! passes the class, port and source filters; [`write`] runs after the decision and writes
//! the kept frame, what was done with it and why, and the SYN-ACK if one was sent, to the ring
//! buffer. Without a dump both read one word and return. The budget is refilled by the dumper
//! every 100 ms; spent, it stops the copying before it starts, so a dump never costs more than
//! its rate cap's worth of copies, and a dumper that died costs nothing after its last refill.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{
        bpf_get_smp_processor_id, bpf_ktime_get_ns,
        generated::{bpf_probe_read_kernel, bpf_xdp_load_bytes},
    },
    programs::XdpContext,
};
use synguard_common::{
    Action,
    dump::{DumpConfig, DumpFrame, DumpRecord, NO_REASON, NO_REASON_BIT, SNAP},
};

use crate::{
    count::Outcome,
    maps::{SYNGUARD_DUMP, SYNGUARD_DUMP_BUDGET, SYNGUARD_DUMP_CONFIG, SYNGUARD_DUMP_FRAME},
    parse::{Packet, frame_len, ptr_at},
};

/// The dump's configuration, this CPU's kept frame and its budget, while a dump runs.
#[inline(always)]
fn running() -> Option<(
    &'static DumpConfig,
    &'static mut DumpFrame,
    &'static mut u64,
)> {
    let config = SYNGUARD_DUMP_CONFIG.get(0)?;
    if config.session == 0 {
        return None;
    }
    let frame = SYNGUARD_DUMP_FRAME.get_ptr_mut(0)?;
    let budget = SYNGUARD_DUMP_BUDGET.get_ptr_mut(0)?;
    // SAFETY: this CPU's own slots, for this run of the program; XDP runs with preemption
    // disabled, so nothing else writes them meanwhile.
    Some(unsafe { (config, &mut *frame, &mut *budget) })
}

/// Keeps a copy of the frame as it arrived, if a dump wants it.
#[inline(always)]
pub fn keep(ctx: &XdpContext, packet: &Packet) {
    let Some((config, frame, budget)) = running() else {
        return;
    };
    let session = config.session;
    frame.session = 0;
    if *budget == 0 || config.classes & (1 << (packet.class as u32)) == 0 {
        return;
    }
    if config.port != 0 {
        let Some(ports) = packet.tcp.and_then(|tcp| ptr_at::<[u8; 4]>(ctx, tcp.l4)) else {
            return;
        };
        // SAFETY: `ptr_at` checked the 4 bytes against the frame.
        let ports = unsafe { *ports };
        let port = config.port.to_be_bytes();
        if ports[0..2] != port && ports[2..4] != port {
            return;
        }
    }
    if config.source_family != 0 {
        let Some(ip) = packet.ip else {
            return;
        };
        let mut words = [0u32; 4];
        if ip.ipv6 {
            let Some(src) = ptr_at::<[u32; 4]>(ctx, ip.l3 + 8) else {
                return;
            };
            // SAFETY: checked against the frame by `ptr_at`.
            words = unsafe { src.read_unaligned() };
        } else {
            let Some(src) = ptr_at::<u32>(ctx, ip.l3 + 12) else {
                return;
            };
            // SAFETY: as above.
            words[0] = unsafe { src.read_unaligned() };
        }
        if !config.source_matches(ip.ipv6, words) {
            return;
        }
    }
    let len = frame_len(ctx);
    frame.len = len as u32;
    let copy = copy_len(len);
    // SAFETY: `copy` bytes fit in the frame and in `bytes`.
    let rc =
        unsafe { bpf_xdp_load_bytes(ctx.ctx, 0, frame.bytes.as_mut_ptr() as *mut c_void, copy) };
    if rc == 0 {
        frame.session = session;
    }
}

/// Writes the kept frame and its outcome, with the reply if one is sent.
#[inline(always)]
pub fn write(ctx: &XdpContext, outcome: Outcome) {
    let Some((config, frame, budget)) = running() else {
        return;
    };
    let session = config.session;
    if frame.session != session || *budget == 0 {
        return;
    }
    frame.session = 0;
    let reason = outcome.reason();
    let bit = if reason < 63 {
        reason as u32
    } else {
        NO_REASON_BIT
    };
    if config.reasons & (1 << bit) == 0 {
        return;
    }
    *budget -= 1;
    let Some(mut entry) = SYNGUARD_DUMP.reserve::<DumpRecord>(0) else {
        // The dumper is behind; it learns of the loss from the gap in the budget it gave.
        return;
    };
    let record = entry.as_mut_ptr();
    let action = outcome.action();
    let sent = action == Action::Tx as usize;
    let now_len = frame_len(ctx);
    // SAFETY: `record` is the reserved entry, valid for a whole `DumpRecord`; the copies read
    // `SNAP` bytes of map memory and at most `SNAP` bytes of the frame.
    unsafe {
        (*record).at_ns = bpf_ktime_get_ns();
        (*record).session = session;
        (*record).ifindex = (*ctx.ctx).ingress_ifindex;
        (*record).rx_queue = (*ctx.ctx).rx_queue_index;
        (*record).cpu = bpf_get_smp_processor_id();
        (*record).len = frame.len;
        (*record).class = outcome.class() as u8;
        (*record).action = action as u8;
        (*record).reason = if reason < 63 { reason as u8 } else { NO_REASON };
        (*record).xdp_code = ACTION_CODES[action & 3] as u8;
        // What was kept, not all SNAP bytes: a SYN is 60 to 100 bytes, and the copies are
        // most of a record's cost.
        bpf_probe_read_kernel(
            (*record).bytes.as_mut_ptr() as *mut c_void,
            copy_len(frame.len as usize),
            frame.bytes.as_ptr() as *const c_void,
        );
        (*record).reply_len = 0;
        let copy = copy_len(now_len);
        if sent
            && bpf_xdp_load_bytes(
                ctx.ctx,
                0,
                (*record).reply.as_mut_ptr() as *mut c_void,
                copy,
            ) == 0
        {
            (*record).reply_len = now_len as u32;
        }
    }
    // No wakeup: waking the reader from here (an irq_work, kernel/bpf/ringbuf.c,
    // bpf_ringbuf_notify()) cost more than the copies, on every record the reader had caught
    // up to (`cargo xtask bench dump`); the dumper reads on a timer instead.
    entry.submit(BPF_RB_NO_WAKEUP as u64);
}

/// How much of a frame of `len` bytes is copied: 1 to `SNAP`, in a form the verifier can
/// bound without a branch (a zero length never reaches the helper). A frame is never empty; if
/// one were, the helper would refuse the read.
#[inline(always)]
fn copy_len(len: usize) -> u32 {
    const { assert!(SNAP.is_power_of_two()) };
    ((len.min(SNAP).wrapping_sub(1) & (SNAP - 1)) + 1) as u32
}

/// XDP return codes by `Action`'s values: Pass, Drop, Tx, Aborted.
const ACTION_CODES: [u32; 4] = [
    Action::Pass.xdp_code(),
    Action::Drop.xdp_code(),
    Action::Tx.xdp_code(),
    Action::Aborted.xdp_code(),
];
