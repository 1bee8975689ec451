//! Connections each CPU of the XDP program found established, so that their ACKs pass without
//! a socket lookup (`xdp-ebpf/src/established.rs`): a small direct-mapped per-CPU table, not
//! pinned, since a new program learns afresh.

/// Name of the per-CPU array of [`KnownConnection`], [`SLOTS`] per CPU.
pub const ESTABLISHED_MAP: &str = "SYNGUARD_ESTABLISHED";
/// Entries per CPU: a power of two. Two connections that share a slot only cost each other
/// lookups.
pub const SLOTS: u32 = 64;
/// Segments an entry serves before its connection is looked up again.
pub const USES: u64 = 64;

/// One entry: the 4-tuple as five words (source and destination address, 16 bytes each with
/// IPv4 in the first 4, then both ports and the family), the count of closed sockets when it
/// was learned, and the uses left.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownConnection {
    pub key: [u64; 5],
    pub closes: u64,
    pub uses: u64,
}

const _: () = assert!(SLOTS.is_power_of_two() && size_of::<KnownConnection>() == 56);

// SAFETY: plain old data, no padding (checked above).
#[cfg(feature = "user")]
unsafe impl aya::Pod for KnownConnection {}

impl KnownConnection {
    /// Whether the entry is for `key` (word by word: an array comparison is a `memcmp` call on
    /// BPF).
    #[inline(always)]
    pub fn holds(&self, key: &[u64; 5]) -> bool {
        (self.key[0] ^ key[0])
            | (self.key[1] ^ key[1])
            | (self.key[2] ^ key[2])
            | (self.key[3] ^ key[3])
            | (self.key[4] ^ key[4])
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_holds_its_own_tuple_only() {
        let entry = KnownConnection {
            key: [1, 2, 3, 4, 5],
            closes: 0,
            uses: USES,
        };
        assert!(entry.holds(&[1, 2, 3, 4, 5]));
        for i in 0..5 {
            let mut other = entry.key;
            other[i] ^= 1 << 40;
            assert!(!entry.holds(&other), "word {i}");
        }
    }
}
