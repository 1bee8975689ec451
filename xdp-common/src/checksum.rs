//! Internet checksum arithmetic (RFC 1071), as the XDP program needs it for the SYN-ACKs it
//! writes: one's-complement sums over big-endian 16-bit words, folded at the end.

/// Adds `bytes`, taken as big-endian 16-bit words (a trailing odd byte is padded with zero),
/// to a running 32-bit sum. Call `fold` on the result.
#[inline(always)]
pub fn sum_words(sum: u32, bytes: &[u8]) -> u32 {
    // A 64-bit accumulator cannot overflow on any packet (2^48 words), so the carries are
    // folded once at the end, not after every word: BPF registers are 64 bits anyway.
    let mut wide = u64::from(sum);
    let mut chunks = bytes.chunks_exact(2);
    for pair in &mut chunks {
        wide += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        wide += u64::from(*last) << 8;
    }
    // 2^32 = 1 modulo 2^16 - 1: folding the high half in keeps the one's-complement sum.
    wide = (wide & 0xffff_ffff) + (wide >> 32);
    wide = (wide & 0xffff_ffff) + (wide >> 32);
    wide as u32
}

/// Folds a running sum into the 16-bit checksum field value (complemented).
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The TCP pseudo-header sum for IPv4 (RFC 9293, section 3.1).
#[inline(always)]
pub fn pseudo_ipv4(src: &[u8; 4], dst: &[u8; 4], tcp_len: u16) -> u32 {
    let sum = sum_words(0, src);
    let sum = sum_words(sum, dst);
    sum + u32::from(crate::classify::IPPROTO_TCP) + u32::from(tcp_len)
}

/// The TCP pseudo-header sum for IPv6 (RFC 8200, section 8.1).
#[inline(always)]
pub fn pseudo_ipv6(src: &[u8; 16], dst: &[u8; 16], tcp_len: u16) -> u32 {
    let sum = sum_words(0, src);
    let sum = sum_words(sum, dst);
    sum + u32::from(crate::classify::IPPROTO_TCP) + u32::from(tcp_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071, section 3: the sum of these words is 0xddf2.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum_words(0, &bytes)), !0xddf2);
    }

    #[test]
    fn a_header_with_its_checksum_sums_to_zero() {
        // An IPv4 header from a capture, checksum 0xb861 at bytes 10-11.
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let check = fold(sum_words(0, &header));
        assert_eq!(check, 0xb861);
        header[10..12].copy_from_slice(&check.to_be_bytes());
        assert_eq!(fold(sum_words(0, &header)), 0);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum_words(0, &[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }
}
