//! The allow and deny lists: an LPM trie per family, keyed by source prefix, whose value says
//! allow or deny. The trie returns the longest matching prefix, so an address allowed inside a
//! denied network passes, and the other way round.

use aya_ebpf::{maps::lpm_trie::Key, programs::XdpContext};

use crate::{
    maps::{SYNGUARD_LIST_V4, SYNGUARD_LIST_V6},
    parse::{Addresses, IpAt, addresses},
};

/// The verdict for the packet's source (`synguard_common::config::list`), if it is listed.
#[inline(always)]
pub fn lookup(ctx: &XdpContext, ip: &IpAt) -> Option<u32> {
    match addresses(ctx, ip)? {
        Addresses::V4 { src, .. } => SYNGUARD_LIST_V4.get(Key::new(32, *src)).copied(),
        Addresses::V6 { src, .. } => SYNGUARD_LIST_V6.get(Key::new(128, *src)).copied(),
    }
}
