//! The per-source SYN rate limit: the pure parts, shared by the XDP program and the controller
//! and unit-tested here.
//!
//! A token bucket per source prefix is exact but costs a hash-map entry per source, and a
//! spoofed flood from random sources would churn such a map on every packet. So sources earn a
//! bucket: every SYN first goes through a count-min sketch (fixed memory, a few array cells
//! per packet, no allocation) that estimates how many SYNs its source sent in the last one to
//! two windows. Only a source whose estimate reaches [`promote_threshold`] (half its limit over
//! one window) is looked up in, or added to, the table of exact buckets. A count-min sketch
//! only ever over-estimates, so a sketch error can cost a needless bucket, never a wrong drop.
//!
//! The buckets are GCRA ("virtual scheduling"), the token bucket written as one timestamp: the
//! theoretical arrival time (TAT) of the next conforming SYN. One u64 per source, so CPUs
//! update it with a compare-and-swap, never a lock.

/// A source prefix: the address masked to the configured length. IPv4 addresses are stored
/// IPv4-mapped (`::ffff:a.b.c.d`), so one table holds both families.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SourceKey {
    pub addr: [u8; 16],
}

impl SourceKey {
    /// `addr` masked to its first `prefix` bits (at most 32).
    #[inline(always)]
    pub fn v4(addr: [u8; 4], prefix: u32) -> SourceKey {
        let bits = u32::from_be_bytes(addr) & prefix_mask_32(prefix);
        let mut key = [0u8; 16];
        key[10] = 0xff;
        key[11] = 0xff;
        let masked = bits.to_be_bytes();
        key[12] = masked[0];
        key[13] = masked[1];
        key[14] = masked[2];
        key[15] = masked[3];
        SourceKey { addr: key }
    }

    /// `addr` masked to its first `prefix` bits (at most 128).
    #[inline(always)]
    pub fn v6(addr: [u8; 16], prefix: u32) -> SourceKey {
        let high = u64::from_be_bytes([
            addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
        ]) & prefix_mask_64(prefix);
        let low = u64::from_be_bytes([
            addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15],
        ]) & prefix_mask_64(prefix.saturating_sub(64));
        let mut key = [0u8; 16];
        let (h, l) = (high.to_be_bytes(), low.to_be_bytes());
        let mut i = 0;
        while i < 8 {
            key[i] = h[i];
            key[8 + i] = l[i];
            i += 1;
        }
        SourceKey { addr: key }
    }

    /// The key's two halves as integers, for hashing.
    #[inline(always)]
    fn words(&self) -> (u64, u64) {
        let a = &self.addr;
        (
            u64::from_le_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
            u64::from_le_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
        )
    }
}

#[inline(always)]
fn prefix_mask_32(prefix: u32) -> u32 {
    if prefix == 0 {
        0
    } else if prefix >= 32 {
        u32::MAX
    } else {
        u32::MAX << (32 - prefix)
    }
}

#[inline(always)]
fn prefix_mask_64(prefix: u32) -> u64 {
    if prefix == 0 {
        0
    } else if prefix >= 64 {
        u64::MAX
    } else {
        u64::MAX << (64 - prefix)
    }
}

/// GCRA: a SYN arriving at `now` against a bucket whose theoretical arrival time is `tat`
/// conforms if, once charged `interval_ns`, the bucket is at most `burst_ns` ahead of now.
/// A bucket long idle (TAT in the past) starts from now: that is the burst refilling. One
/// more than `burst_ns` ahead (the limit was lowered since it was charged) counts as exactly
/// that far ahead: the source keeps its debt, never more than the new burst.
#[inline(always)]
pub fn gcra(tat: u64, now: u64, interval_ns: u64, burst_ns: u64) -> Charge {
    let horizon = now.saturating_add(burst_ns);
    let start = if tat > now { tat } else { now };
    let start = if start > horizon { horizon } else { start };
    let next = start.saturating_add(interval_ns);
    if next <= horizon {
        Charge::Admit(next)
    } else if tat > horizon {
        Charge::Deny(Some(horizon))
    } else {
        Charge::Deny(None)
    }
}

/// What [`gcra`] decided, and the TAT to store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charge {
    /// The SYN conforms; the bucket's new TAT.
    Admit(u64),
    /// The SYN is over the limit, and is not charged. `Some`: the TAT was beyond the burst
    /// horizon and is to be brought back to it.
    Deny(Option<u64>),
}

/// Rows of the sketch: the estimate is the smallest of the source's cells, one per row.
pub const SKETCH_ROWS: u32 = 2;
/// Cells per row and per window parity. 32,768 keeps a 150k SYN/s flood from random sources
/// under one SYN per cell per window on average (measured: `cargo xtask bench limiter`).
pub const SKETCH_COLS: u32 = 32_768;
/// The sketch's cells: rows x 2 windows (current and previous, by parity) x columns.
pub const SKETCH_CELLS: u32 = SKETCH_ROWS * 2 * SKETCH_COLS;
/// A sketch window is 2^27 ns (134 ms).
pub const SKETCH_WINDOW_SHIFT: u32 = 27;
pub const SKETCH_WINDOW_NS: u64 = 1 << SKETCH_WINDOW_SHIFT;

/// The index of `key`'s cell in `row` for windows of `parity` (0 or 1). `seed` is chosen at
/// random by the controller, so nobody can compute in advance which sources share cells.
#[inline(always)]
pub fn sketch_cell(key: &SourceKey, seed: u32, row: u32, parity: u64) -> u32 {
    const MULTIPLIERS: [u64; 2] = [0x9e37_79b9_7f4a_7c15, 0xc2b2_ae3d_27d4_eb4f];
    let (a, b) = key.words();
    let mixed = (a ^ u64::from(seed)).wrapping_mul(0xff51_afd7_ed55_8ccd) ^ b;
    let row_mul = MULTIPLIERS[(row & 1) as usize];
    let hash = (mixed ^ (mixed >> 31)).wrapping_mul(row_mul);
    let column = (hash >> (64 - 15)) as u32 & (SKETCH_COLS - 1);
    (row & 1) * 2 * SKETCH_COLS + (parity as u32 & 1) * SKETCH_COLS + column
}

/// A sketch cell packs the window it counts for (high 32 bits) and the count (low 32 bits), so
/// one atomic add counts and one compare-and-swap starts a new window.
#[inline(always)]
pub const fn cell_value(window: u64, count: u32) -> u64 {
    (window << 32) | count as u64
}

/// The count a cell holds for `window`: zero if it was last written for another window.
#[inline(always)]
pub const fn cell_count(cell: u64, window: u64) -> u32 {
    if cell >> 32 == window & 0xffff_ffff {
        cell as u32
    } else {
        0
    }
}

/// The window `now` falls in, truncated to the 32 bits a cell keeps.
#[inline(always)]
pub const fn sketch_window(now: u64) -> u64 {
    (now >> SKETCH_WINDOW_SHIFT) & 0xffff_ffff
}

/// The sketch estimate at which a source gets an exact bucket: half of what its limit allows
/// over one window, at least 1 and at most the burst (a source may not get more than its
/// burst through before it is metered). The estimate spans the current and previous windows,
/// so a source sending at its limit is always above it.
pub const fn promote_threshold(rate_pps: u32, burst: u32) -> u32 {
    let half_window = (rate_pps as u64 * SKETCH_WINDOW_NS / 2 / 1_000_000_000) as u32;
    let threshold = if half_window < burst {
        half_window
    } else {
        burst
    };
    if threshold == 0 { 1 } else { threshold }
}

/// Nanoseconds between conforming SYNs at `rate_pps` (0: no limit).
pub const fn interval_ns(rate_pps: u32) -> u64 {
    if rate_pps == 0 {
        0
    } else {
        1_000_000_000 / rate_pps as u64
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), a byte array.
unsafe impl aya::Pod for SourceKey {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_masked_prefixes() {
        let a = SourceKey::v4([198, 18, 200, 7], 32);
        assert_eq!(&a.addr[10..], &[0xff, 0xff, 198, 18, 200, 7]);
        assert_eq!(
            SourceKey::v4([198, 18, 200, 7], 24),
            SourceKey::v4([198, 18, 200, 99], 24)
        );
        assert_ne!(
            SourceKey::v4([198, 18, 200, 7], 24),
            SourceKey::v4([198, 18, 201, 7], 24)
        );
        assert_eq!(
            SourceKey::v4([1, 2, 3, 4], 0),
            SourceKey::v4([9, 9, 9, 9], 0)
        );

        let mut v6 = [0u8; 16];
        v6[0] = 0xfd;
        v6[7] = 0x12;
        v6[15] = 1;
        let full = SourceKey::v6(v6, 128);
        assert_eq!(full.addr, v6);
        let slash64 = SourceKey::v6(v6, 64);
        assert_eq!(slash64.addr[7], 0x12);
        assert_eq!(slash64.addr[15], 0);
        let mut other = v6;
        other[15] = 200;
        assert_eq!(SourceKey::v6(other, 64), slash64);
        assert_eq!(SourceKey::v6(v6, 56).addr[7], 0);
        // IPv4 and IPv6 never share a key: the v4 keys are IPv4-mapped.
        assert_ne!(SourceKey::v4([0, 0, 0, 1], 32), SourceKey::v6([0; 16], 128));
    }

    /// Runs SYNs at the given times through one bucket; returns how many conform.
    fn admitted(tat: &mut u64, times: impl Iterator<Item = u64>, interval: u64, burst: u64) -> u32 {
        let mut passed = 0;
        for now in times {
            match gcra(*tat, now, interval, burst) {
                Charge::Admit(next) => {
                    *tat = next;
                    passed += 1;
                }
                Charge::Deny(Some(clamped)) => *tat = clamped,
                Charge::Deny(None) => {}
            }
        }
        passed
    }

    #[test]
    fn gcra_lets_the_burst_through_then_the_rate() {
        let interval = 10_000_000; // 100/s
        let burst = 5 * interval;
        let now = 1_000_000_000;
        let mut tat = 0;
        let at_once = core::iter::repeat_n(now, 20);
        assert_eq!(
            admitted(&mut tat, at_once, interval, burst),
            5,
            "a burst of 5"
        );
        assert_eq!(
            gcra(tat, now + interval - 1, interval, burst),
            Charge::Deny(None)
        );
        assert!(matches!(
            gcra(tat, now + interval, interval, burst),
            Charge::Admit(_)
        ));
        // One second of 1,000 SYN/s after that: 100 pass, as the rate says.
        let second = (1..=1000u64).map(|i| now + i * 1_000_000);
        assert_eq!(admitted(&mut tat, second, interval, burst), 100);
        // Idle for long: the burst is back, no more.
        let later = core::iter::repeat_n(now + 60_000_000_000, 20);
        assert_eq!(admitted(&mut tat, later, interval, burst), 5);
    }

    #[test]
    fn a_lowered_limit_keeps_the_debt_up_to_the_new_burst() {
        let now = 1_000_000_000;
        // Charged 300 ms ahead under an old limit; now 1,000/s with a burst of 3.
        let mut tat = now + 300_000_000;
        let (interval, burst) = (1_000_000, 3_000_000);
        assert_eq!(
            gcra(tat, now, interval, burst),
            Charge::Deny(Some(now + burst))
        );
        assert_eq!(
            admitted(&mut tat, core::iter::once(now), interval, burst),
            0
        );
        assert_eq!(tat, now + burst);
        // Debt repaid at the new rate: after 5 ms, the 3 of the burst.
        let later = core::iter::repeat_n(now + 5_000_000, 10);
        assert_eq!(admitted(&mut tat, later, interval, burst), 3);
    }

    #[test]
    fn cells_count_per_window() {
        let w = sketch_window(5 * SKETCH_WINDOW_NS + 3);
        assert_eq!(w, 5);
        let cell = cell_value(w, 7);
        assert_eq!(cell_count(cell, 5), 7);
        assert_eq!(cell_count(cell, 6), 0, "a stale window counts nothing");
        assert_eq!(
            cell_count(cell_value(u32::MAX as u64, 3), u32::MAX as u64),
            3
        );
    }

    #[test]
    fn cells_spread_and_stay_in_bounds() {
        let mut hits = [0u32; SKETCH_COLS as usize];
        for i in 0..32_768u32 {
            let key = SourceKey::v4((0xc612_8000 + i).to_be_bytes(), 32);
            for row in 0..SKETCH_ROWS {
                for parity in 0..2 {
                    let cell = sketch_cell(&key, 12345, row, parity);
                    assert!(cell < SKETCH_CELLS);
                    assert_eq!(cell / SKETCH_COLS, row * 2 + parity as u32);
                }
            }
            hits[(sketch_cell(&key, 12345, 0, 0) % SKETCH_COLS) as usize] += 1;
        }
        // 32,768 consecutive addresses over 32,768 cells: no cell may be crowded (a bad hash
        // would put whole runs of addresses together).
        let max = hits.iter().max().copied().unwrap();
        assert!(max <= 10, "most crowded cell holds {max}");
        // The rows hash independently.
        let key = SourceKey::v4([198, 18, 130, 1], 32);
        assert_ne!(
            sketch_cell(&key, 1, 0, 0),
            sketch_cell(&key, 1, 1, 0) - 2 * SKETCH_COLS
        );
    }

    #[test]
    fn promotion_threshold_follows_rate_and_burst() {
        // 100/s over 134 ms is 13.4 SYNs; half of it.
        assert_eq!(promote_threshold(100, 100), 6);
        assert_eq!(promote_threshold(100, 3), 3, "never more than the burst");
        assert_eq!(promote_threshold(5, 10), 1, "low limits meter every source");
        assert_eq!(promote_threshold(u32::MAX, u32::MAX), 288_230_376);
        assert_eq!(interval_ns(0), 0);
        assert_eq!(interval_ns(300), 3_333_333);
    }
}
