//! Handshakes per protected port: the SYN-ACKs the XDP program sent and the ACKs that came
//! back with a valid cookie. Their ratio tells a crowd of real clients (nearly every SYN-ACK
//! is answered) from a spoofed flood (nearly none is). Label values stay bounded: the
//! controller gives each listener's port a row of its own, up to [`PORT_ROWS`], and every
//! other port shares row 0, `other`.

/// Ports with a row of their own.
pub const PORT_ROWS: usize = 64;
/// Rows of counters: row 0 for every port without one, then one per port.
pub const ROWS: usize = PORT_ROWS + 1;

/// Name of the array mapping a port to its row (`u8`, 65536 entries; 0: `other`).
pub const PORT_ROWS_MAP: &str = "SYNGUARD_PORT_ROWS";
pub const PORT_ROWS_ENTRIES: u32 = 65_536;
/// Name of the array of each row's port (`u16`, [`ROWS`] entries; 0: not given out), so that a
/// controller taking over pinned maps knows the rows a previous one gave out.
pub const ROW_PORTS_MAP: &str = "SYNGUARD_ROW_PORTS";
/// Name of the one-slot per-CPU array of [`Handshakes`].
pub const HANDSHAKES_MAP: &str = "SYNGUARD_HANDSHAKES";

/// The counters, by row.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshakes {
    /// SYN-ACKs sent from XDP (a SYN answered with a cookie and transmitted).
    pub answered: [u64; ROWS],
    /// ACKs whose cookie the kernel's check found valid: the kernel makes the connection.
    pub completed: [u64; ROWS],
}

const _: () = assert!(size_of::<Handshakes>() == 2 * ROWS * 8);

impl Handshakes {
    pub const ZERO: Handshakes = Handshakes {
        answered: [0; ROWS],
        completed: [0; ROWS],
    };

    /// One handshake step on `row`; a row out of range counts as `other`.
    #[inline(always)]
    pub fn record(&mut self, row: usize, completed: bool) {
        let row = if row < ROWS { row } else { 0 };
        let cells = match completed {
            true => &mut self.completed,
            false => &mut self.answered,
        };
        if let Some(cell) = cells.get_mut(row) {
            *cell += 1;
        }
    }

    /// Adds another CPU's counters.
    pub fn accumulate(&mut self, other: &Handshakes) {
        for row in 0..ROWS {
            self.answered[row] += other.answered[row];
            self.completed[row] += other.completed[row];
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, only u64 fields, no padding (asserted above).
unsafe impl aya::Pod for Handshakes {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_out_of_range_count_as_other() {
        let mut h = Handshakes::ZERO;
        h.record(3, false);
        h.record(3, true);
        h.record(ROWS, false);
        h.record(usize::MAX, true);
        assert_eq!((h.answered[3], h.completed[3]), (1, 1));
        assert_eq!((h.answered[0], h.completed[0]), (1, 1));
        let mut sum = Handshakes::ZERO;
        sum.accumulate(&h);
        sum.accumulate(&h);
        assert_eq!(sum.answered[3], 2);
    }
}
