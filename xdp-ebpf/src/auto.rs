//! `auto` mode's switch, in the data path: the SYN rate to protected ports over 10 ms windows;
//! cookies from the first window at or above the threshold, back to passing once the rate has
//! stayed below half the threshold for the hold time.
//!
//! Every CPU keeps its own window in a per-CPU map and never writes another CPU's: when it
//! closes a window it reads all CPUs' latest rates (bpf_map_lookup_percpu_elem, Linux 5.19)
//! and decides for itself. Rust offers no atomic read-modify-write on the BPF target
//! (`atomic-cas: false` in its target spec), and this design needs none.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_map_lookup_percpu_elem},
    maps::PerCpuArray,
};
use synguard_common::{
    AutoState, Config,
    config::{AUTO_STALE_NS, AUTO_WINDOW_NS},
};

/// CPUs whose rates are summed. XXX: on machines with more CPUs, the SYNs that the extra CPUs
/// see are not counted towards the threshold.
const MAX_CPUS: u32 = 256;

/// Counts one SYN and returns whether this CPU answers with cookies.
#[inline(always)]
pub fn observe_syn(states: &PerCpuArray<AutoState>, config: &Config) -> bool {
    let Some(state) = states.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's own slot; XDP runs with preemption disabled.
    let state = unsafe { &mut *state };
    state.window_syns += 1;
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let elapsed = now.wrapping_sub(state.window_start_ns);
    if elapsed < AUTO_WINDOW_NS {
        return state.under_attack != 0;
    }
    // Close the window. One that ran long (no SYN for a while) spreads its SYNs over all of it.
    state.rate_pps = per_second(state.window_syns, elapsed);
    state.rate_at_ns = now;
    state.window_syns = 0;
    state.window_start_ns = now;

    let total = total_rate(states, now);
    state.total_rate_pps = total;
    let threshold = u64::from(config.auto_threshold_pps);
    if total >= threshold {
        state.under_attack = 1;
    }
    if total >= threshold / 2 {
        state.last_busy_ns = now;
    } else if now.wrapping_sub(state.last_busy_ns) >= u64::from(config.auto_hold_ms) * 1_000_000 {
        state.under_attack = 0;
    }
    state.under_attack != 0
}

/// `count` events over `elapsed_ns`, per second. Written without `saturating_mul`, whose
/// overflow check needs a 128-bit multiply the BPF backend cannot emit.
#[inline(always)]
fn per_second(count: u64, elapsed_ns: u64) -> u64 {
    const NS: u64 = 1_000_000_000;
    if count > u64::MAX / NS {
        return u64::MAX;
    }
    count * NS / elapsed_ns
}

/// Whether this CPU answers with cookies, without counting a SYN (for ACKs).
#[inline(always)]
pub fn under_attack(states: &PerCpuArray<AutoState>) -> bool {
    states.get(0).is_some_and(|state| state.under_attack != 0)
}

/// The sum of every CPU's latest rate, leaving out rates older than `AUTO_STALE_NS`.
#[inline(always)]
fn total_rate(states: &PerCpuArray<AutoState>, now: u64) -> u64 {
    let key = 0u32;
    let map = states as *const PerCpuArray<AutoState> as *mut c_void;
    let mut total = 0u64;
    for cpu in 0..MAX_CPUS {
        // SAFETY: `map` is the per-CPU array itself (aya's map types are the bare map
        // definition); the helper returns NULL past the last possible CPU.
        let value =
            unsafe { bpf_map_lookup_percpu_elem(map, &key as *const u32 as *const c_void, cpu) }
                as *const AutoState;
        if value.is_null() {
            break;
        }
        // SAFETY: a non-null result points at that CPU's slot. Another CPU may be writing it;
        // a torn read of two u64s costs at most one window's accuracy.
        let (rate, at) = unsafe { ((*value).rate_pps, (*value).rate_at_ns) };
        if now.wrapping_sub(at) <= AUTO_STALE_NS {
            total = total.saturating_add(rate);
        }
    }
    total
}
