//! `auto` mode's switch, in the data path: the SYN rate to protected ports over 10 ms windows;
//! cookies from the first window at or above the threshold, back to passing once the rate has
//! stayed below half the threshold for the hold time.
//!
//! Rates: every CPU counts its own SYNs in a per-CPU map; when it closes a window it reads all
//! CPUs' latest rates (bpf_map_lookup_percpu_elem, Linux 5.19) and decides. The decision is
//! one state for all CPUs (`AttackState`), changed by compare-and-swap (`atomic`): the one CPU
//! whose swap starts or ends an attack reports it to the controller through a ring buffer
//! (bpf_ringbuf_output, Linux 5.8), so events come once per attack, never per packet. During
//! an attack, each CPU also samples the sources of its SYNs for the controller's log.

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::XdpContext};
use synguard_common::{
    AttackEvent, AttackState, Config,
    config::{
        AUTO_STALE_NS, AUTO_WINDOW_NS, PORT_WINDOW_NS, PORT_WINDOW_SHIFT, SAMPLE_SLOTS, event,
        port_window_threshold,
    },
};

use crate::{
    bpf::{atomic, percpu},
    limit,
    maps::{
        SYNGUARD_ATTACK, SYNGUARD_AUTO, SYNGUARD_EVENTS, SYNGUARD_PORT_RATES, SYNGUARD_SAMPLES,
    },
    parse::IpAt,
};

/// Counts one SYN to `port` and returns whether it is to be answered with a cookie.
#[inline(always)]
pub fn observe_syn(ctx: &XdpContext, ip: &IpAt, port: u16, config: &Config) -> bool {
    let (Some(state), Some(attack)) =
        (SYNGUARD_AUTO.get_ptr_mut(0), SYNGUARD_ATTACK.get_ptr_mut(0))
    else {
        return false;
    };
    // SAFETY: this CPU's own slot; XDP runs with preemption disabled.
    let state = unsafe { &mut *state };
    state.window_syns += 1;
    state.syns += 1;
    // SAFETY: the shared state's fields are aligned u64s of an array map value.
    let active = unsafe { atomic::load(&raw const (*attack).active) } != 0;
    if active {
        sample(ctx, ip, config);
    }
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let port_hot = config.auto_port_threshold_pps != 0 && observe_port(config, port, now);
    let elapsed = now.wrapping_sub(state.window_start_ns);
    if elapsed < AUTO_WINDOW_NS {
        return active || port_hot;
    }
    // Close the window. One that ran long (no SYN for a while) spreads its SYNs over all of it.
    state.rate_pps = per_second(state.window_syns, elapsed);
    state.rate_at_ns = now;
    state.window_syns = 0;
    state.window_start_ns = now;
    let total = total_rate(now);
    state.total_rate_pps = total;
    decide(attack, config, total, now) || port_hot
}

/// Counts the SYN in its port's cell and starts an attack, or keeps it going, if that port
/// alone is over the per-port threshold (at half of it, for the hysteresis). Returns whether
/// it did either.
#[inline(always)]
fn observe_port(config: &Config, port: u16, now: u64) -> bool {
    let (Some(cell), Some(attack)) = (
        SYNGUARD_PORT_RATES.get_ptr_mut(u32::from(port)),
        SYNGUARD_ATTACK.get_ptr_mut(0),
    ) else {
        return false;
    };
    let window = (now >> PORT_WINDOW_SHIFT) & 0xffff_ffff;
    // SAFETY: an aligned u64 cell of an array map.
    let count = u64::from(unsafe { limit::count_in(cell, window) });
    let limit = port_window_threshold(config.auto_port_threshold_pps);
    if count < limit.div_ceil(2) {
        return false;
    }
    // SAFETY: as in `decide`.
    unsafe {
        core::ptr::write_volatile(&raw mut (*attack).last_busy_ns, now);
        if count < limit {
            return atomic::load(&raw const (*attack).active) != 0;
        }
        let rate = count * 1_000_000_000 / PORT_WINDOW_NS;
        let threshold = config.auto_port_threshold_pps;
        start(attack, threshold, u32::from(port), rate, now);
    }
    true
}

/// Starts an attack unless one is going on; the CPU that starts it reports it. Returns
/// whether this call started it.
///
/// # Safety
/// `attack` points at the attack map's one value.
#[inline(always)]
unsafe fn start(
    attack: *mut AttackState,
    threshold_pps: u32,
    port: u32,
    rate: u64,
    now: u64,
) -> bool {
    // SAFETY: as the caller promised; fields are aligned u64s.
    unsafe {
        if atomic::compare_exchange(&raw mut (*attack).active, 0, 1) != 0 {
            return false;
        }
        core::ptr::write_volatile(&raw mut (*attack).started_ns, now);
        core::ptr::write_volatile(&raw mut (*attack).peak_pps, rate);
    }
    let event = AttackEvent {
        kind: event::START,
        threshold_pps,
        port,
        reserved: 0,
        at_ns: now,
        rate_pps: rate,
        peak_pps: rate,
        started_ns: now,
    };
    let _ = SYNGUARD_EVENTS.output::<AttackEvent>(&event, 0);
    true
}

/// Whether SYNs are answered with cookies now, for packets that do not count towards the rate
/// (ACKs). Ends an attack whose hold time has passed: after a flood that stops dead no window
/// closes, and the ACKs of real clients are what still arrives.
#[inline(always)]
pub fn under_attack(config: &Config) -> bool {
    let Some(attack) = SYNGUARD_ATTACK.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: as in `observe_syn`.
    if unsafe { atomic::load(&raw const (*attack).active) } == 0 {
        return false;
    }
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    settle(attack, config, 0, now)
}

/// Starts an attack at or above the threshold, keeps it going at or above half of it, and
/// ends it after the hold time below that.
#[inline(always)]
fn decide(attack: *mut AttackState, config: &Config, total: u64, now: u64) -> bool {
    let threshold = u64::from(config.auto_threshold_pps);
    // SAFETY (all blocks below): `attack` points at the array map's one value, whose fields
    // are aligned u64s; every write that others may race with is atomic.
    unsafe {
        if total >= threshold / 2 {
            core::ptr::write_volatile(&raw mut (*attack).last_busy_ns, now);
        }
        if total < threshold {
            return settle(attack, config, total, now);
        }
        if !start(attack, config.auto_threshold_pps, 0, total, now) {
            raise_peak(&raw mut (*attack).peak_pps, total);
        }
    }
    true
}

/// Ends the attack if the rate has been low for the hold time; returns whether it goes on.
#[inline(always)]
fn settle(attack: *mut AttackState, config: &Config, total: u64, now: u64) -> bool {
    let hold = u64::from(config.auto_hold_ms) * 1_000_000;
    // SAFETY: as in `decide`.
    unsafe {
        let active = &raw mut (*attack).active;
        if atomic::load(active) == 0 {
            return false;
        }
        let quiet = now.wrapping_sub(atomic::load(&raw const (*attack).last_busy_ns));
        if quiet < hold {
            return true;
        }
        if atomic::compare_exchange(active, 1, 0) == 1 {
            let peak = atomic::load(&raw const (*attack).peak_pps);
            let started = atomic::load(&raw const (*attack).started_ns);
            report_stop(config, now, total, peak, started);
        }
    }
    false
}

/// Raises `*peak` to `rate` if it is lower. A few attempts: losing them all means other CPUs
/// keep raising it, and the peak is theirs.
///
/// # Safety
/// `peak` points at an aligned u64 of a map value.
#[inline(always)]
unsafe fn raise_peak(peak: *mut u64, rate: u64) {
    for _ in 0..4 {
        // SAFETY: as the caller promised.
        let seen = unsafe { atomic::load(peak) };
        if seen >= rate || unsafe { atomic::compare_exchange(peak, seen, rate) } == seen {
            return;
        }
    }
}

/// Reports an attack's end.
#[inline(always)]
fn report_stop(config: &Config, now: u64, rate: u64, peak: u64, started: u64) {
    let event = AttackEvent {
        kind: event::STOP,
        threshold_pps: config.auto_threshold_pps,
        port: 0,
        reserved: 0,
        at_ns: now,
        rate_pps: rate,
        peak_pps: peak,
        started_ns: started,
    };
    // A full ring loses the event; the controller also reads the state itself and notices.
    let _ = SYNGUARD_EVENTS.output::<AttackEvent>(&event, 0);
}

/// Records the SYN's source (by the per-source limit's prefixes) in this CPU's sample ring.
#[inline(always)]
fn sample(ctx: &XdpContext, ip: &IpAt, config: &Config) {
    let (Some(ring), Some(key)) = (
        SYNGUARD_SAMPLES.get_ptr_mut(0),
        limit::source_key(ctx, ip, config),
    ) else {
        return;
    };
    // SAFETY: this CPU's own slot; XDP runs with preemption disabled.
    let ring = unsafe { &mut *ring };
    let slot = (ring.next as usize) % SAMPLE_SLOTS;
    if let Some(entry) = ring.keys.get_mut(slot) {
        *entry = key;
    }
    ring.next += 1;
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

/// The sum of every CPU's latest rate, leaving out rates older than `AUTO_STALE_NS`.
#[inline(always)]
fn total_rate(now: u64) -> u64 {
    let mut total = 0u64;
    percpu::for_each_cpu(&SYNGUARD_AUTO, 0, |value| {
        // SAFETY: that CPU's slot. A torn read of two u64s costs at most one window's accuracy.
        let (rate, at) = unsafe { ((*value).rate_pps, (*value).rate_at_ns) };
        if now.wrapping_sub(at) <= AUTO_STALE_NS {
            total = total.saturating_add(rate);
        }
    });
    total
}
