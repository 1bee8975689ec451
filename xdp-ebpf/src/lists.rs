//! The allow and deny lists: an LPM trie per family, keyed by source prefix, whose value says
//! allow or deny. The trie returns the longest matching prefix, so an address allowed inside a
//! denied network passes, and the other way round.

use aya_ebpf::{
    maps::{LpmTrie, lpm_trie::Key},
    programs::XdpContext,
};

use crate::parse::{IpAt, ptr_at};

/// The verdict for the packet's source (`synguard_common::config::list`), if it is listed.
#[inline(always)]
pub fn lookup(
    ctx: &XdpContext,
    ip: &IpAt,
    v4: &LpmTrie<[u8; 4], u32>,
    v6: &LpmTrie<[u8; 16], u32>,
) -> Option<u32> {
    // SAFETY: `ptr_at` checked the header against the frame; the arrays have alignment 1.
    unsafe {
        if ip.ipv6 {
            let header = &*ptr_at::<[u8; 40]>(ctx, ip.l3)?;
            let mut src = [0u8; 16];
            src.copy_from_slice(&header[8..24]);
            v6.get(Key::new(128, src)).copied()
        } else {
            let header = &*ptr_at::<[u8; 20]>(ctx, ip.l3)?;
            let src = [header[12], header[13], header[14], header[15]];
            v4.get(Key::new(32, src)).copied()
        }
    }
}
