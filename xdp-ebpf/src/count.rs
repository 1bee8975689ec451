//! The last stage of every packet's path: record its class and the action taken, then return
//! that action's XDP code. Every exit of the program goes through `finish`.

use aya_ebpf::{maps::PerCpuArray, programs::XdpContext};
use synguard_common::{Action, Class, Stats};

#[inline(always)]
pub fn finish(stats: &PerCpuArray<Stats>, ctx: &XdpContext, class: Class, action: Action) -> u32 {
    // Slot 0 of a one-slot array always exists, so the lookup cannot miss. If it ever did,
    // losing a count is better than changing what happens to the packet.
    if let Some(stats) = stats.get_ptr_mut(0) {
        let len = (ctx.data_end() - ctx.data()) as u64;
        // SAFETY: per-CPU slot, and XDP runs with preemption disabled, so no one else writes it.
        unsafe { (*stats).record(class, action, len) };
    }
    action.xdp_code()
}
