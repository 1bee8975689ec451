//! The per-source SYN rate limit: a count-min sketch in front of exact GCRA buckets (the design
//! and its reasons are in `synguard_common::limit`). Every update to shared state is an atomic
//! add or a compare-and-swap (`atomic`), so all CPUs may meter the same source at once.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns, programs::XdpContext};
use synguard_common::{
    Config,
    limit::{
        Charge, SKETCH_ROWS, SourceKey, cell_count, cell_value, gcra, sketch_cell, sketch_window,
    },
};

use crate::{
    bpf::atomic,
    maps::{SYNGUARD_SKETCH, SYNGUARD_SOURCES, SYNGUARD_STATS},
    parse::{Addresses, IpAt, addresses},
};

/// How often a bucket update may lose the race to another CPU before the SYN is treated as
/// over the limit: each lost race means another SYN from the same source was just admitted.
const CAS_ATTEMPTS: u32 = 4;

/// Whether the SYN's source is within its rate limit; always true when no limit is set. The
/// SYN is counted towards its source either way.
#[inline(always)]
pub fn admit(ctx: &XdpContext, ip: &IpAt, config: &Config) -> bool {
    let interval = u64::from(config.source_interval_ns);
    if interval == 0 {
        return true;
    }
    let Some(key) = source_key(ctx, ip, config) else {
        return true;
    };
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let estimate = sketch_count(&key, config.sketch_seed, now);
    if estimate < config.source_promote {
        // Too few SYNs lately to be anywhere near the limit: no bucket needed.
        return true;
    }
    if let Some(tat) = SYNGUARD_SOURCES.get_ptr_mut(key) {
        return charge(tat, now, interval, config.source_burst_ns);
    }
    // A new heavy source. Its bucket starts charged with what the sketch saw, capped at the
    // burst, so the SYNs it sent before it was metered count against it.
    let seen = (u64::from(estimate) * interval).min(config.source_burst_ns);
    let tat = now + seen;
    if SYNGUARD_SOURCES
        .insert(key, tat, u64::from(BPF_NOEXIST))
        .is_ok()
        && let Some(stats) = SYNGUARD_STATS.get_ptr_mut(0)
    {
        // SAFETY: this CPU's slot; XDP runs with preemption disabled.
        unsafe { (*stats).sources_metered += 1 };
    }
    // Either this CPU made the bucket, or another CPU did at the same moment: admitted now,
    // metered from the next SYN on.
    true
}

/// The packet's source prefix, by the configured prefix lengths.
#[inline(always)]
pub fn source_key(ctx: &XdpContext, ip: &IpAt, config: &Config) -> Option<SourceKey> {
    Some(match addresses(ctx, ip)? {
        Addresses::V4 { src, .. } => SourceKey::v4(*src, config.source_prefix_v4),
        Addresses::V6 { src, .. } => SourceKey::v6(*src, config.source_prefix_v6),
    })
}

/// Counts one SYN for `key` in the current window and returns the sketch's estimate of its
/// SYNs over the current and previous windows: the smallest sum over the rows.
#[inline(always)]
fn sketch_count(key: &SourceKey, seed: u32, now: u64) -> u32 {
    let window = sketch_window(now);
    let previous = window.wrapping_sub(1) & 0xffff_ffff;
    let mut estimate = u32::MAX;
    for row in 0..SKETCH_ROWS {
        let (Some(current), Some(last)) = (
            SYNGUARD_SKETCH.get_ptr_mut(sketch_cell(key, seed, row, window)),
            SYNGUARD_SKETCH.get_ptr(sketch_cell(key, seed, row, previous)),
        ) else {
            return 0;
        };
        // SAFETY: both point at aligned u64 cells of an array map.
        let count = unsafe { count_in(current, window) }
            .saturating_add(cell_count(unsafe { atomic::load(last) }, previous));
        estimate = estimate.min(count);
    }
    estimate
}

/// Adds one to `cell`'s count for `window`, starting the window's count if the cell still
/// holds an older one; returns the new count.
///
/// # Safety
/// `cell` points at an aligned u64 of an array map.
#[inline(always)]
pub unsafe fn count_in(cell: *mut u64, window: u64) -> u32 {
    // SAFETY: as the caller promised.
    unsafe {
        let seen = atomic::load(cell);
        if cell_count(seen, window) == 0 {
            let fresh = cell_value(window, 1);
            if atomic::compare_exchange(cell, seen, fresh) == seen {
                return 1;
            }
            // Another CPU restarted (or bumped) the cell first: count on top of it.
        }
        let before = atomic::fetch_add(cell, 1);
        cell_count(before.wrapping_add(1), window)
    }
}

/// Charges one SYN to a bucket if it conforms.
#[inline(always)]
fn charge(tat: *mut u64, now: u64, interval: u64, burst: u64) -> bool {
    for _ in 0..CAS_ATTEMPTS {
        // SAFETY: a hash map value holding one u64, 8-byte aligned.
        let seen = unsafe { atomic::load(tat) };
        match gcra(seen, now, interval, burst) {
            // SAFETY: as above.
            Charge::Admit(next) => {
                if unsafe { atomic::compare_exchange(tat, seen, next) } == seen {
                    return true;
                }
            }
            Charge::Deny(clamped) => {
                if let Some(horizon) = clamped {
                    // SAFETY: as above. If another CPU changed it meanwhile, theirs stands.
                    unsafe { atomic::compare_exchange(tat, seen, horizon) };
                }
                return false;
            }
        }
    }
    false
}
