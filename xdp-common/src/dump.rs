//! `synguard dump`: what the XDP program saw and did, captured from inside it. The dumper (the
//! `synguard dump` process) writes a [`DumpConfig`] and refills each CPU's budget of records;
//! the program copies the first [`SNAP`] bytes of each frame that passes the filters as it
//! arrives, and after its decision writes a [`DumpRecord`] (the frame, the action and reason,
//! and the SYN-ACK it sent, if any) to a ring buffer the dumper reads. With no dump running
//! the program reads one word per packet; a dumper that dies stops costing anything once its
//! budget is spent, within one refill period.

/// Bytes of each frame kept: every header of a handshake segment, as `tcpdump -s 256`.
pub const SNAP: usize = 256;

/// Name of the one-slot array holding the [`DumpConfig`].
pub const DUMP_CONFIG_MAP: &str = "SYNGUARD_DUMP_CONFIG";
/// Name of the per-CPU one-slot array of records each CPU may still write (`u64`).
pub const DUMP_BUDGET_MAP: &str = "SYNGUARD_DUMP_BUDGET";
/// Name of the per-CPU one-slot array holding the frame as it arrived ([`DumpFrame`]).
pub const DUMP_FRAME_MAP: &str = "SYNGUARD_DUMP_FRAME";
/// Name of the ring buffer of [`DumpRecord`]s.
pub const DUMP_RING_MAP: &str = "SYNGUARD_DUMP";
/// Its size: about 1,900 records, a fifth of a second at the default rate cap.
pub const DUMP_RING_BYTES: u32 = 1 << 20;

/// Bit of [`DumpConfig::reasons`] for packets without a reason (not a SYN or ACK to a
/// protected port).
pub const NO_REASON_BIT: u32 = 63;

/// What to capture. `session` 0: no dump runs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpConfig {
    /// Nonzero while a dump runs; each dump has its own, so a frame kept for one is never
    /// written for another.
    pub session: u64,
    /// The dumper's process id, so the controller can end the dump of a dumper that died.
    pub owner_pid: u32,
    /// Bit `Class as u32`: frames of that class are captured.
    pub classes: u32,
    /// Bit `Reason as u32` (and [`NO_REASON_BIT`]): records with that reason are written.
    pub reasons: u64,
    /// TCP source or destination port to match; 0: any.
    pub port: u16,
    /// 0: any source; 4 or 6: only sources of that family within the prefix below.
    pub source_family: u16,
    pub _pad: u32,
    /// The source prefix, as 32-bit words of the network-order address (IPv4: word 0 only),
    /// already masked, and the mask.
    pub source: [u32; 4],
    pub source_mask: [u32; 4],
}

/// A frame as it arrived, kept by the CPU that is deciding about it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DumpFrame {
    /// The dump it was kept for; 0 once written or when it did not match.
    pub session: u64,
    /// Its length on the wire.
    pub len: u32,
    pub _pad: u32,
    pub bytes: [u8; SNAP],
}

/// One captured frame with what synguard did, as the ring buffer carries it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DumpRecord {
    /// CLOCK_MONOTONIC when it was written, in ns.
    pub at_ns: u64,
    pub session: u64,
    pub ifindex: u32,
    pub rx_queue: u32,
    pub cpu: u32,
    /// The frame's length as it arrived, and as sent back (0: nothing was sent).
    pub len: u32,
    pub reply_len: u32,
    /// `Class`, `Action` and `Reason` as numbers (reason 0xff: none), and the XDP return code.
    pub class: u8,
    pub action: u8,
    pub reason: u8,
    pub xdp_code: u8,
    pub bytes: [u8; SNAP],
    pub reply: [u8; SNAP],
}

pub const NO_REASON: u8 = 0xff;

const _: () = assert!(size_of::<DumpConfig>() == 64);
const _: () = assert!(size_of::<DumpFrame>() == 16 + SNAP);
const _: () = assert!(size_of::<DumpRecord>() == 40 + 2 * SNAP);

impl DumpConfig {
    /// Whether a source address (network-order words; IPv4 in word 0) passes the filter.
    #[inline(always)]
    pub fn source_matches(&self, ipv6: bool, words: [u32; 4]) -> bool {
        match self.source_family {
            0 => true,
            4 if !ipv6 => words[0] & self.source_mask[0] == self.source[0],
            6 if ipv6 => {
                words[0] & self.source_mask[0] == self.source[0]
                    && words[1] & self.source_mask[1] == self.source[1]
                    && words[2] & self.source_mask[2] == self.source[2]
                    && words[3] & self.source_mask[3] == self.source[3]
            }
            _ => false,
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, plain integers, no implicit padding (sizes asserted above).
unsafe impl aya::Pod for DumpConfig {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for DumpRecord {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_filter_matches_within_its_prefix_and_family() {
        let mut config = DumpConfig::default();
        assert!(config.source_matches(false, [7, 0, 0, 0]));
        // 198.18.128.0/17, in network order.
        let net = u32::from_ne_bytes([198, 18, 128, 0]);
        let mask = u32::from_ne_bytes([255, 255, 128, 0]);
        config.source_family = 4;
        config.source = [net, 0, 0, 0];
        config.source_mask = [mask, 0, 0, 0];
        assert!(config.source_matches(false, [u32::from_ne_bytes([198, 18, 200, 1]), 0, 0, 0]));
        assert!(!config.source_matches(false, [u32::from_ne_bytes([198, 18, 1, 1]), 0, 0, 0]));
        assert!(
            !config.source_matches(true, [net, 0, 0, 0]),
            "another family"
        );
    }
}
