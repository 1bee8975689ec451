//! Global caps (SYNs passed to the kernel, SYN-ACKs sent), enforced by every CPU on its own
//! share. No CPU writes another's state (no cache line bounces between CPUs per packet): each
//! admits events against its own budget for a 10 ms window, and when it closes a window it
//! reads every CPU's demand in their last windows (bpf_map_lookup_percpu_elem) and takes its
//! budget for the next (`cpu_budget`): a share in proportion to demand when the cap binds, its
//! own demand plus a share of the slack when it does not, so that traffic under the cap is
//! never dropped because it moved to a CPU idle in the last window.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use synguard_common::config::{CAP_WINDOW_NS, cpu_budget, window_budget};

use crate::{bpf::percpu, maps::SYNGUARD_CAPS};

/// Counts one event against cap `index` (`synguard_common::config::cap`), limited to `cap_pps`
/// per second (0: no cap), and says whether it is admitted.
#[inline(always)]
pub fn admit(index: u32, cap_pps: u32) -> bool {
    if cap_pps == 0 {
        return true;
    }
    let Some(state) = SYNGUARD_CAPS.get_ptr_mut(index) else {
        return true;
    };
    // SAFETY: this CPU's own slot; XDP runs with preemption disabled.
    let state = unsafe { &mut *state };
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let elapsed = now.wrapping_sub(state.window_start_ns);
    if elapsed >= CAP_WINDOW_NS {
        state.last_demand = state.demand;
        state.last_at_ns = now;
        // Windows stay on a 10 ms grid: restarting one at the first packet after it expired
        // would stretch it by the gap, and the admitted rate would drift below the cap
        // (about 2 % with bursty arrivals, measured).
        state.window_start_ns = now - elapsed % CAP_WINDOW_NS;
        state.demand = 0;
        state.used = 0;
        let (total, cpus) = total_demand(index, now);
        state.budget = cpu_budget(window_budget(cap_pps), state.last_demand, total, cpus);
    }
    state.demand += 1;
    if state.used < state.budget {
        state.used += 1;
        true
    } else {
        false
    }
}

/// Every CPU's demand in its last window, leaving out windows that closed two windows ago or
/// earlier (that CPU has gone quiet); and how many CPUs there are.
#[inline(always)]
fn total_demand(index: u32, now: u64) -> (u64, u64) {
    let mut total = 0u64;
    let cpus = percpu::for_each_cpu(&SYNGUARD_CAPS, index, |value| {
        // SAFETY: that CPU's slot; a torn read costs one window's accuracy at most.
        let (demand, at) = unsafe { ((*value).last_demand, (*value).last_at_ns) };
        if now.wrapping_sub(at) <= 2 * CAP_WINDOW_NS {
            total = total.saturating_add(demand);
        }
    });
    (total, cpus)
}
