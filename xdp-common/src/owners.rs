//! The filter of sources that may own a socket: a bit per hash of a remote address, set by
//! every path by which the kernel can come to hold a socket for that address, and rebuilt by
//! the controller from the kernel's socket table. A SYN from a source whose bit is clear
//! cannot belong to any socket, so the XDP program answers it without the socket lookup
//! (docs/design.md, "The fast path"). A set bit (a real owner, or a hash collision) only
//! costs the lookup.
//!
//! Both sides hash the same way: the XDP program and its tracing program in the kernel, the
//! controller's rebuild on the host. An IPv4 address is hashed as its IPv4-mapped IPv6 form
//! (`::ffff:a.b.c.d`), which is how a dual-stack socket holds an IPv4 peer.

/// 2^18 bits per generation: 32 KiB, which stays in a CPU's L2 cache. Collisions only cost
/// the lookup: with 20,000 owners about 7 % of spoofed sources find their bit set.
pub const BITS_LOG2: u32 = 18;
pub const WORDS: usize = 1 << (BITS_LOG2 - 6);

/// One generation of the filter: the value of one slot of `OWNERS_MAP`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OwnerBits(pub [u64; WORDS]);

impl OwnerBits {
    pub const EMPTY: OwnerBits = OwnerBits([0; WORDS]);

    pub fn set(&mut self, bit: u32) {
        self.0[(bit >> 6) as usize % WORDS] |= 1 << (bit & 63);
    }

    pub fn has(&self, bit: u32) -> bool {
        self.0[(bit >> 6) as usize % WORDS] & (1 << (bit & 63)) != 0
    }
}

/// The filter's one-slot state (`OWNERS_STATE_MAP`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnersState {
    /// 1 once the controller has the tracing program attached and a first generation built:
    /// until then, and whenever it is 0, every SYN gets the socket lookup.
    pub armed: u32,
    /// The generation the XDP program reads (0 or 1). Both are written; the controller
    /// rebuilds the other one and then switches.
    pub active: u32,
    /// Bumped by the tracing program whenever a socket enters or leaves LISTEN: a listener
    /// the XDP program learned before the bump is looked up again.
    pub listener_epoch: u64,
    /// Bumped by the tracing program whenever a socket closes (takes TCP_CLOSE): a connection
    /// the XDP program found established before the bump is looked up again
    /// (`xdp-ebpf/src/established.rs`).
    pub closes: u64,
}

const _: () = assert!(size_of::<OwnersState>() == 24 && size_of::<OwnerBits>() == WORDS * 8);

// SAFETY: plain old data, no padding (checked above).
#[cfg(feature = "user")]
unsafe impl aya::Pod for OwnerBits {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for OwnersState {}

/// The key words of an IPv4 address (4 bytes in network order).
#[inline(always)]
pub fn key_v4(addr: u32) -> [u32; 4] {
    [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff]), addr]
}

/// The key words of an IPv6 address (16 bytes in network order, as four native-order loads).
/// An IPv4-mapped address gives the same key as its IPv4 address.
#[inline(always)]
pub fn key_v6(words: [u32; 4]) -> [u32; 4] {
    words
}

/// The filter bit for a key.
#[inline(always)]
pub fn bit_of(key: [u32; 4]) -> u32 {
    // Multiplicative hashing: the top bits of the product depend on every input bit.
    let mixed = key[0] ^ key[1].rotate_left(7) ^ key[2].rotate_left(13) ^ key[3].rotate_left(19);
    mixed.wrapping_mul(0x9e37_79b1) >> (32 - BITS_LOG2)
}

/// The filter bit of an address as bytes (4 or 16), for the controller and the tests.
pub fn bit_of_bytes(addr: &[u8]) -> Option<u32> {
    let word = |i: usize| u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    match addr.len() {
        4 => Some(bit_of(key_v4(word(0)))),
        16 => Some(bit_of(key_v6([word(0), word(4), word(8), word(12)]))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_address_and_its_mapped_form_share_a_bit() {
        let v4 = [198, 18, 0, 2];
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12..].copy_from_slice(&v4);
        assert_eq!(bit_of_bytes(&v4), bit_of_bytes(&mapped));
        assert_ne!(bit_of_bytes(&v4), bit_of_bytes(&[198, 18, 0, 3]));
    }

    #[test]
    fn bits_spread_over_the_whole_filter() {
        // 65,536 consecutive sources (a /16) land on many distinct bits, in both halves.
        let mut bits = OwnerBits::EMPTY;
        let mut distinct = 0;
        for i in 0..65_536u32 {
            let b = (0xc612_0000u32 | i).to_be_bytes();
            let bit = bit_of_bytes(&b).unwrap();
            assert!(bit < 1 << BITS_LOG2);
            if !bits.has(bit) {
                distinct += 1;
                bits.set(bit);
            }
        }
        // Random placement would give about 58,000 of 262,144 bits for 65,536 keys.
        assert!(distinct > 50_000, "{distinct}");
    }
}
