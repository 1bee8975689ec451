//! The TCP side of answering a SYN with a cookie: what the client's SYN offers, what the
//! SYN-ACK may offer in return so that the kernel honours it when the ACK comes back, and the
//! bytes of that SYN-ACK.
//!
//! Reference: net/ipv4/syncookies.c (cookie_init_timestamp, cookie_timestamp_decode,
//! cookie_v4_check), net/ipv4/tcp_input.c (tcp_parse_options) and net/ipv4/tcp_output.c
//! (tcp_select_initial_window) in Linux 6.18.

use crate::{
    checksum,
    config::{Config, flags},
    promise::{HostFacts, Promise},
};

/// Longest TCP options area (data offset 15).
pub const MAX_OPTIONS_LEN: usize = 40;
/// Length of a SYN-ACK's TCP header with timestamps and window scaling: 20 bytes plus 20 of
/// options (MSS, SACK-permitted or two NOPs, timestamps, NOP, window scale, as Linux lays them
/// out). Also the size of the buffer `write_synack` fills.
pub const SYNACK_TCP_LEN: usize = 40;
/// With timestamps but no window scale (the client offered none): the same without the last
/// word, as the kernel sends it (`tcp_options_write()` adds no padding).
pub const SYNACK_TCP_LEN_NO_WSCALE: usize = 36;
/// Length without timestamps: the MSS option only, as the kernel's own cookie SYN-ACK. It also
/// keeps the reply to a bare 54-byte SYN within 4 bytes of it: veth leaves such a frame only
/// 10 bytes of tailroom (SKB_DATA_ALIGN(54) - 54, veth_convert_skb_to_xdp_buff()).
pub const SYNACK_TCP_LEN_SHORT: usize = 24;
/// The largest window scale TCP allows (RFC 7323, section 2.3).
pub const MAX_WSCALE: u8 = 14;

/// The kernel reads these back from the low 6 bits of the TSecr a cookie ACK echoes
/// (TS_OPT_* in net/ipv4/syncookies.c).
pub const TS_OPT_WSCALE_MASK: u32 = 0xf;
pub const TS_OPT_SACK: u32 = 1 << 4;
pub const TS_OPT_ECN: u32 = 1 << 5;
const TSBITS: u32 = 6;

/// TCP option kinds (IANA "TCP Option Kind Numbers").
mod kind {
    pub const EOL: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WINDOW: u8 = 3;
    pub const SACK_PERMITTED: u8 = 4;
    pub const TIMESTAMP: u8 = 8;
}

/// What a client's SYN offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynOptions {
    pub mss: Option<u16>,
    /// The client's window scale, clamped to 14 as the kernel does.
    pub wscale: Option<u8>,
    pub sack_permitted: bool,
    /// The client's TSval.
    pub tsval: Option<u32>,
}

/// Parses the options area of a SYN (`options[..len]`), as tcp_parse_options() does: an
/// option with a length below 2 or running past the end stops the parse, and an option whose
/// length does not match its kind is ignored. Never panics, never loops more than 40 times.
pub fn parse_syn_options(options: &[u8; MAX_OPTIONS_LEN], len: usize) -> SynOptions {
    let mut parsed = SynOptions::default();
    let mut at = 0;
    for _ in 0..MAX_OPTIONS_LEN {
        match parse_option_at(options, len, at, &mut parsed) {
            Some(next) => at = next,
            None => break,
        }
    }
    parsed
}

/// The options of a SYN laid out exactly as Linux sends them (MSS, SACK-permitted,
/// timestamps, NOP, window scale: 20 bytes), read at fixed offsets; `None` for any other
/// layout, which [`parse_syn_options`] handles. Whenever it returns `Some`, it agrees with
/// `parse_syn_options` (tested), and saves the XDP program the option loop for the most common
/// client (and for floods that copy it).
#[inline(always)]
pub fn parse_linux_syn_options(options: &[u8; MAX_OPTIONS_LEN], len: usize) -> Option<SynOptions> {
    let o = options;
    let linux = len == 20
        && [o[0], o[1], o[4], o[5], o[6], o[7], o[16], o[17], o[18]]
            == [
                kind::MSS,
                4,
                kind::SACK_PERMITTED,
                2,
                kind::TIMESTAMP,
                10,
                kind::NOP,
                kind::WINDOW,
                3,
            ];
    if !linux {
        return None;
    }
    let mss = u16::from_be_bytes([o[2], o[3]]);
    Some(SynOptions {
        mss: if mss == 0 { None } else { Some(mss) },
        wscale: Some(if o[19] > MAX_WSCALE {
            MAX_WSCALE
        } else {
            o[19]
        }),
        sack_permitted: true,
        tsval: Some(u32::from_be_bytes([o[8], o[9], o[10], o[11]])),
    })
}

/// One step of [`parse_syn_options`]: reads the option at `at` into `parsed` and returns where
/// the next one starts, or `None` when the parse is over. Always moves forward.
///
/// The XDP program drives the steps itself, keeping `at` in map memory: a cursor the verifier
/// tracks exactly makes it walk every path through 40 iterations and give up.
#[inline(always)]
pub fn parse_option_at(
    options: &[u8; MAX_OPTIONS_LEN],
    len: usize,
    at: usize,
    parsed: &mut SynOptions,
) -> Option<usize> {
    let len = if len > MAX_OPTIONS_LEN {
        MAX_OPTIONS_LEN
    } else {
        len
    };
    if at >= len {
        return None;
    }
    let kind = *options.get(at)?;
    match kind {
        kind::EOL => return None,
        kind::NOP => return Some(at + 1),
        _ => {}
    }
    if at + 1 >= len {
        return None;
    }
    let size = usize::from(*options.get(at + 1)?);
    if size < 2 || at + size > len {
        return None;
    }
    let field = |i: usize| options.get(at + i).copied().unwrap_or(0);
    match (kind, size) {
        (kind::MSS, 4) => {
            let mss = u16::from_be_bytes([field(2), field(3)]);
            // A zero MSS is ignored (tcp_parse_options).
            if mss != 0 {
                parsed.mss = Some(mss);
            }
        }
        (kind::WINDOW, 3) => {
            let shift = field(2);
            parsed.wscale = Some(if shift > MAX_WSCALE {
                MAX_WSCALE
            } else {
                shift
            });
        }
        (kind::SACK_PERMITTED, 2) => parsed.sack_permitted = true,
        (kind::TIMESTAMP, 10) => {
            parsed.tsval = Some(u32::from_be_bytes([field(2), field(3), field(4), field(5)]));
        }
        _ => {}
    }
    Some(at + size)
}

/// What the SYN-ACK offers back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynAckOptions {
    pub mss: u16,
    pub sack_permitted: bool,
    /// Our own window scale, when the client offered one.
    pub wscale: Option<u8>,
    /// (TSval, TSecr).
    pub timestamp: Option<(u32, u32)>,
    /// ECN accepted: the SYN-ACK carries ECE.
    pub ecn: bool,
}

/// How a SYN asks for ECN: its TCP header's bytes 12 (AE and the reserved bits) and 13 (the
/// flags), and its IP header's TOS / traffic class. Kept as the raw bytes and judged only in
/// [`negotiate`]: on BPF every comparison that yields a bool is a branch, and branches taken
/// before the SYN path's per-CPU loops multiply the verifier's work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynEcn {
    pub byte12: u8,
    pub flags: u8,
    pub ip_tos: u8,
}

impl SynEcn {
    /// ECE and CWR both set: RFC 3168 ECN setup.
    #[inline(always)]
    pub fn ece_and_cwr(&self) -> bool {
        use crate::classify::tcp_flags::{CWR, ECE};
        self.flags & (ECE | CWR) == (ECE | CWR)
    }

    /// Any of ECE, CWR and AE set (AE, formerly NS, is bit 0 of byte 12).
    #[inline(always)]
    pub fn any(&self) -> bool {
        use crate::classify::tcp_flags::{CWR, ECE};
        self.flags & (ECE | CWR) != 0 || self.byte12 & 1 != 0
    }

    /// AE or one of the three reserved bits set (`th->ae`, `th->res1`).
    #[inline(always)]
    pub fn ae_or_reserved(&self) -> bool {
        self.byte12 & 0x0f != 0
    }

    /// The SYN's own IP header is ECN-capable (ECT or CE).
    #[inline(always)]
    pub fn ip_ect(&self) -> bool {
        self.ip_tos & 3 != 0
    }
}

/// Why a SYN is left to the kernel: its SYN-ACK would carry something synguard cannot know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Declined {
    /// `tcp_timestamps=1`: the kernel's TSval carries a per-connection secret offset
    /// (`secure_tcp_ts_off()`), so a cookie SYN-ACK with timestamps cannot match it.
    TimestampOffset,
    /// `tcp_ecn` 3 or more and the SYN sets an ECN flag: the kernel may negotiate Accurate ECN,
    /// whose SYN-ACK encoding a cookie does not carry.
    AccurateEcn,
}

/// Decides what the SYN-ACK offers, as the kernel's own cookie SYN-ACK would
/// (`tcp_conn_request()` with `want_cookie`, `tcp_synack_options()`), so that the kernel,
/// rebuilding the connection from the cookie ACK, agrees with the client.
///
/// The kernel parses timestamps, SACK-permitted and window scale only when their sysctls are on
/// (`tcp_parse_options()`), and learns SACK, window scaling and ECN back only from the low bits
/// of the echoed timestamp (`cookie_timestamp_decode()`), so without timestamps none of them is
/// offered: the kernel clears them for a cookie without timestamps (`tcp_clear_options()`).
#[inline(always)]
pub fn negotiate(
    syn: &SynOptions,
    ecn: SynEcn,
    config: &Config,
    host: &HostFacts,
    promise: &Promise,
    now_ms: u32,
) -> Result<SynAckOptions, Declined> {
    let bare = SynAckOptions {
        mss: promise.mss,
        sack_permitted: false,
        wscale: None,
        timestamp: None,
        ecn: false,
    };
    if host.ecn >= 3 && ecn.any() {
        return Err(Declined::AccurateEcn);
    }
    // The operator opted out of timestamps, or the kernel ignores them.
    let client_tsval = match syn.tsval {
        Some(tsval) if config.has(flags::TIMESTAMPS) && host.timestamps != 0 => tsval,
        _ => return Ok(bare),
    };
    if host.timestamps == 1 {
        return Err(Declined::TimestampOffset);
    }
    let sack = syn.sack_permitted && host.sack != 0;
    let client_wscale = syn.wscale.filter(|_| host.window_scaling != 0);
    // tcp_ecn_create_request(): ECE and CWR, and an IP header that is not ECN-capable unless
    // AE or a reserved bit is set too; `tcp_ecn` 1 or 2 accepts it.
    let ecn = ecn.ece_and_cwr() && (!ecn.ip_ect() || ecn.ae_or_reserved()) && host.ecn != 0;
    let mut bits = match client_wscale {
        Some(shift) => u32::from(shift),
        None => TS_OPT_WSCALE_MASK,
    };
    if sack {
        bits |= TS_OPT_SACK;
    }
    if ecn {
        bits |= TS_OPT_ECN;
    }
    Ok(SynAckOptions {
        mss: promise.mss,
        sack_permitted: sack,
        wscale: client_wscale.map(|_| promise.wscale),
        timestamp: Some((cookie_tsval(now_ms, bits), client_tsval)),
        ecn,
    })
}

/// The TSval of a cookie SYN-ACK: the millisecond clock with its low 6 bits replaced by
/// `bits`, never ahead of the clock, because the kernel's later TSvals on the connection come
/// from the same clock (with tcp_timestamps=2 there is no per-connection offset) and the
/// client's PAWS check drops segments whose TSval goes backwards. Same rule as
/// cookie_init_timestamp().
#[inline(always)]
pub const fn cookie_tsval(now_ms: u32, bits: u32) -> u32 {
    let ts = (now_ms >> TSBITS << TSBITS) | (bits & ((1 << TSBITS) - 1));
    if ts > now_ms {
        ts.wrapping_sub(1 << TSBITS)
    } else {
        ts
    }
}

impl SynAckOptions {
    /// The SYN-ACK's TCP header length for these options.
    #[inline(always)]
    pub fn tcp_len(&self) -> usize {
        match (self.timestamp, self.wscale) {
            (None, _) => SYNACK_TCP_LEN_SHORT,
            (Some(_), None) => SYNACK_TCP_LEN_NO_WSCALE,
            (Some(_), Some(_)) => SYNACK_TCP_LEN,
        }
    }
}

/// The SYN-ACK's TCP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynAck {
    pub src_port: u16,
    pub dst_port: u16,
    /// The cookie.
    pub seq: u32,
    /// The client's ISN + 1.
    pub ack: u32,
    pub window: u16,
    pub options: SynAckOptions,
}

/// Writes the SYN-ACK's TCP header, options and checksum into `tcp`, and returns its length
/// (`options.tcp_len()`; bytes past it are left as they were). `pseudo_sum` is the pseudo-header sum
/// for a segment of that length (`checksum::pseudo_ipv4/6`).
///
/// The options take the kernel's own layout (`tcp_options_write()`, net/ipv4/tcp_output.c),
/// without padding it does not send:
/// - no timestamps: MSS only (24 bytes): SACK and window scaling are never offered then (see
///   `negotiate`);
/// - timestamps: MSS, then SACK-permitted and the timestamp in one word each side of the
///   kind bytes (two NOPs instead of SACK-permitted when it is not offered), TSval, TSecr (36);
/// - and window scaling: NOP, window scale (40).
///
/// Three fixed lengths keep the packet rewrite a constant-size copy, which the verifier can
/// check.
#[inline(always)]
pub fn write_synack(synack: &SynAck, pseudo_sum: u32, tcp: &mut [u8; SYNACK_TCP_LEN]) -> usize {
    const NOP: u8 = kind::NOP;
    let o = &synack.options;
    let len = o.tcp_len();
    tcp[0..2].copy_from_slice(&synack.src_port.to_be_bytes());
    tcp[2..4].copy_from_slice(&synack.dst_port.to_be_bytes());
    tcp[4..8].copy_from_slice(&synack.seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&synack.ack.to_be_bytes());
    tcp[12] = ((len / 4) as u8) << 4;
    tcp[13] = crate::classify::tcp_flags::SYN | crate::classify::tcp_flags::ACK;
    if o.ecn {
        tcp[13] |= crate::classify::tcp_flags::ECE;
    }
    tcp[14..16].copy_from_slice(&synack.window.to_be_bytes());
    // Checksum (zero while summing) and urgent pointer.
    tcp[16..20].copy_from_slice(&[0; 4]);

    let mss = o.mss.to_be_bytes();
    tcp[20..24].copy_from_slice(&[kind::MSS, 4, mss[0], mss[1]]);
    let Some((tsval, tsecr)) = o.timestamp else {
        let check = checksum::fold(checksum::sum_words(
            pseudo_sum,
            &tcp[..SYNACK_TCP_LEN_SHORT],
        ));
        tcp[16..18].copy_from_slice(&check.to_be_bytes());
        return SYNACK_TCP_LEN_SHORT;
    };
    tcp[24..26].copy_from_slice(&if o.sack_permitted {
        [kind::SACK_PERMITTED, 2]
    } else {
        [NOP, NOP]
    });
    tcp[26] = kind::TIMESTAMP;
    tcp[27] = 10;
    tcp[28..32].copy_from_slice(&tsval.to_be_bytes());
    tcp[32..36].copy_from_slice(&tsecr.to_be_bytes());
    let Some(shift) = o.wscale else {
        let check = checksum::fold(checksum::sum_words(
            pseudo_sum,
            &tcp[..SYNACK_TCP_LEN_NO_WSCALE],
        ));
        tcp[16..18].copy_from_slice(&check.to_be_bytes());
        return SYNACK_TCP_LEN_NO_WSCALE;
    };
    tcp[36..40].copy_from_slice(&[NOP, kind::WINDOW, 3, shift]);
    let check = checksum::fold(checksum::sum_words(pseudo_sum, &tcp[..]));
    tcp[16..18].copy_from_slice(&check.to_be_bytes());
    len
}

/// The TCP header handed to the kernel's cookie helpers instead of the SYN's own: its first 20
/// bytes with the data offset set to 6, and one MSS option. The cookie depends only on
/// addresses, ports, sequence number and MSS, so it is the same; but the length is a constant
/// the verifier can check, where the SYN's own (20 to 60 bytes) is not. A SYN without an MSS
/// option gets the MSS the kernel assumes then (TCP_MSS_DEFAULT, 536, or 1220 for IPv6,
/// which the helpers' tables both round to their lowest entry anyway).
///
/// Written in place, every byte: a 24-byte array returned by value is a `memmove` call on BPF.
#[inline(always)]
pub fn write_cookie_probe(
    probe: &mut [u8; 24],
    syn_header: &[u8; 20],
    mss: Option<u16>,
    ipv6: bool,
) {
    let mss = mss.unwrap_or(if ipv6 { 1220 } else { 536 }).to_be_bytes();
    probe[..20].copy_from_slice(syn_header);
    probe[12] = (6 << 4) | (syn_header[12] & 0x0f);
    probe[20..24].copy_from_slice(&[kind::MSS, 4, mss[0], mss[1]]);
}

/// The IP header fields of a SYN-ACK that come from the listener and the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynAckIp {
    /// TOS (IPv4) or traffic class (IPv6).
    pub tos: u8,
    /// TTL or hop limit.
    pub ttl: u8,
    /// IPv4: DF set and identification 0, as `ip_build_and_send_pkt()` sends a SYN-ACK when
    /// the listener does path-MTU discovery; otherwise no DF and `id`.
    pub dont_fragment: bool,
    pub id: u16,
}

/// Writes a fresh IPv4 header for the SYN-ACK into `ip` (no options), checksum included. Every
/// byte is set, field by field: zeroing the header first would be a byte-by-byte `memset`
/// call on BPF.
#[inline(always)]
pub fn write_ipv4_header(ip: &mut [u8; 20], src: [u8; 4], dst: [u8; 4], f: SynAckIp, tcp_len: u16) {
    let total = 20 + tcp_len;
    ip[0] = 0x45;
    ip[1] = f.tos;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    if f.dont_fragment {
        ip[4..6].copy_from_slice(&[0, 0]);
        ip[6..8].copy_from_slice(&[0x40, 0]);
    } else {
        ip[4..6].copy_from_slice(&f.id.to_be_bytes());
        ip[6..8].copy_from_slice(&[0, 0]);
    }
    ip[8] = f.ttl;
    ip[9] = crate::classify::IPPROTO_TCP;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let check = checksum::fold(checksum::sum_words(0, &ip[..]));
    ip[10..12].copy_from_slice(&check.to_be_bytes());
}

/// Writes a fresh IPv6 header for the SYN-ACK into `ip`, every byte, field by field. The flow
/// label is 0: the kernel's is a hash of a random per-request value (`ip6_make_flowlabel()`
/// over the request's `txhash`), which no one can reproduce, and 0 is always valid (RFC 6437).
#[inline(always)]
pub fn write_ipv6_header(
    ip: &mut [u8; 40],
    src: &[u8; 16],
    dst: &[u8; 16],
    f: SynAckIp,
    tcp_len: u16,
) {
    ip[0..4].copy_from_slice(&[0x60 | (f.tos >> 4), f.tos << 4, 0, 0]);
    ip[4..6].copy_from_slice(&tcp_len.to_be_bytes());
    ip[6] = crate::classify::IPPROTO_TCP;
    ip[7] = f.ttl;
    ip[8..24].copy_from_slice(src);
    ip[24..40].copy_from_slice(dst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::tcp_flags::{CWR, ECE};

    fn opts(bytes: &[u8]) -> SynOptions {
        let mut buf = [0u8; MAX_OPTIONS_LEN];
        buf[..bytes.len()].copy_from_slice(bytes);
        parse_syn_options(&buf, bytes.len())
    }

    /// Linux's SYN: MSS 1460, SACK-permitted, timestamps, NOP, window scale 7.
    const LINUX_SYN: [u8; 20] = [
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0x00, 0x01, 0x02, 0x03, 0, 0, 0, 0, 1, 3, 3, 7,
    ];

    #[test]
    fn parses_the_options_linux_sends() {
        assert_eq!(
            opts(&LINUX_SYN),
            SynOptions {
                mss: Some(1460),
                wscale: Some(7),
                sack_permitted: true,
                tsval: Some(0x0001_0203),
            }
        );
    }

    #[test]
    fn the_linux_fast_path_agrees_with_the_general_parser() {
        let mut buf = [0u8; MAX_OPTIONS_LEN];
        buf[..20].copy_from_slice(&LINUX_SYN);
        assert_eq!(parse_linux_syn_options(&buf, 20), Some(opts(&LINUX_SYN)));
        assert_eq!(
            parse_linux_syn_options(&buf, 24),
            None,
            "other lengths: general parser"
        );
        // Random variations around the Linux layout: the fast path either declines or agrees.
        let mut state: u64 = 0x1234_5678_9abc_def1;
        let mut agreed = 0;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut buf = [0u8; MAX_OPTIONS_LEN];
            buf[..20].copy_from_slice(&LINUX_SYN);
            for k in 0..3 {
                let at = (state >> (8 * k)) as usize % 20;
                buf[at] = (state >> (8 * k + 32)) as u8 % 16;
            }
            if let Some(fast) = parse_linux_syn_options(&buf, 20) {
                assert_eq!(fast, parse_syn_options(&buf, 20), "{buf:?}");
                agreed += 1;
            }
        }
        assert!(
            agreed > 1000,
            "the variations exercised the fast path ({agreed})"
        );
    }

    #[test]
    fn parses_windows_order_and_padding() {
        // MSS, NOP, WS 8, NOP, NOP, SACK-permitted.
        let parsed = opts(&[2, 4, 0x05, 0xb4, 1, 3, 3, 8, 1, 1, 4, 2]);
        assert_eq!(parsed.mss, Some(1460));
        assert_eq!(parsed.wscale, Some(8));
        assert!(parsed.sack_permitted);
        assert_eq!(parsed.tsval, None);
    }

    #[test]
    fn stops_at_eol_and_at_bad_lengths_like_the_kernel() {
        assert_eq!(
            opts(&[0, 2, 4, 5, 0xb4]),
            SynOptions::default(),
            "EOL first"
        );
        assert_eq!(
            opts(&[4, 2, 3, 1, 7]).wscale,
            None,
            "length 1 stops the parse"
        );
        assert!(
            opts(&[4, 2, 3, 1, 7]).sack_permitted,
            "options before it count"
        );
        assert_eq!(opts(&[2, 4, 0x05]).mss, None, "runs past the end");
        assert_eq!(
            opts(&[2, 5, 0x05, 0xb4, 0]).mss,
            None,
            "wrong length for MSS is ignored"
        );
        assert_eq!(opts(&[2, 4, 0, 0]).mss, None, "zero MSS is ignored");
        assert_eq!(opts(&[3, 3, 15]).wscale, Some(14), "clamped to 14");
        assert!(
            opts(&[99, 4, 0, 0, 4, 2]).sack_permitted,
            "unknown kinds skipped"
        );
        // 40 NOPs: the bound on steps is never the reason to stop early.
        let mut many = [1u8; 40];
        many[36..40].copy_from_slice(&[1, 3, 3, 9]);
        assert_eq!(opts(&many).wscale, Some(9));
    }

    #[test]
    fn the_length_argument_bounds_the_parse() {
        let mut buf = [0u8; MAX_OPTIONS_LEN];
        buf[..20].copy_from_slice(&LINUX_SYN);
        assert_eq!(parse_syn_options(&buf, 4).mss, Some(1460));
        assert!(!parse_syn_options(&buf, 4).sack_permitted);
        assert_eq!(parse_syn_options(&buf, 0), SynOptions::default());
        assert_eq!(
            parse_syn_options(&buf, 500).wscale,
            Some(7),
            "clamped to 40"
        );
    }

    #[test]
    fn tsval_keeps_the_clock_and_never_runs_ahead() {
        assert_eq!(cookie_tsval(1_000_040, 0x17), 1_000_000 | 0x17);
        assert_eq!(
            cookie_tsval(1_000_000, 0x17),
            1_000_000 - 64 + 0x17,
            "would run ahead"
        );
        let now = 64 * 1000 + 5;
        let ts = cookie_tsval(now, 0x2f);
        assert!(ts <= now);
        assert_eq!(ts & 0x3f, 0x2f);
        assert_eq!(ts, 64 * 999 + 0x2f);
        for now in [0u32, 1, 63, 64, 1 << 31, u32::MAX] {
            for bits in [0, 7, 0x0f, 0x1f, 0x3f] {
                let ts = cookie_tsval(now, bits);
                assert_eq!(ts & 0x3f, bits, "now {now} bits {bits}");
                assert!(now.wrapping_sub(ts) < 64, "now {now} bits {bits}: {ts}");
            }
        }
    }

    fn config(flags: u32) -> Config {
        Config {
            flags,
            ..Config::DEFAULT
        }
    }

    fn host() -> HostFacts {
        HostFacts {
            generation: 1,
            timestamps: 2,
            sack: 1,
            window_scaling: 1,
            ecn: 2,
            ..HostFacts::default()
        }
    }

    fn promise() -> Promise {
        Promise {
            mss: 1460,
            window_ts: 65160,
            window_plain: 64240,
            wscale: 10,
            ..Promise::default()
        }
    }

    const ECN_SETUP: SynEcn = SynEcn {
        byte12: 0xa0,
        flags: 0x02 | ECE | CWR,
        ip_tos: 0,
    };

    #[test]
    fn negotiation_encodes_the_clients_options_in_the_tsval() {
        let syn = opts(&LINUX_SYN);
        let now = 123_456_789;
        let ts = config(flags::TIMESTAMPS);
        let got = negotiate(&syn, ECN_SETUP, &ts, &host(), &promise(), now).unwrap();
        assert_eq!(got.mss, 1460);
        assert!(got.sack_permitted);
        assert_eq!(
            got.wscale,
            Some(10),
            "the listener's scale, not the client's"
        );
        assert!(got.ecn);
        let (tsval, tsecr) = got.timestamp.unwrap();
        assert_eq!(tsecr, 0x0001_0203);
        assert_eq!(
            tsval & 0x3f,
            7 | TS_OPT_SACK | TS_OPT_ECN,
            "the client's scale"
        );

        let no_sack = HostFacts { sack: 0, ..host() };
        let got = negotiate(&syn, SynEcn::default(), &ts, &no_sack, &promise(), now).unwrap();
        assert!(!got.sack_permitted && !got.ecn);
        assert_eq!(got.timestamp.unwrap().0 & 0x3f, 7);

        let no_ws = SynOptions {
            wscale: None,
            ..syn
        };
        let got = negotiate(&no_ws, SynEcn::default(), &ts, &host(), &promise(), now).unwrap();
        assert_eq!(got.wscale, None);
        assert_eq!(got.tcp_len(), SYNACK_TCP_LEN_NO_WSCALE);
        assert_eq!(
            got.timestamp.unwrap().0 & 0x3f,
            TS_OPT_WSCALE_MASK | TS_OPT_SACK
        );
        // tcp_window_scaling=0: the kernel ignores the client's scale.
        let no_scaling = HostFacts {
            window_scaling: 0,
            ..host()
        };
        let got = negotiate(&syn, SynEcn::default(), &ts, &no_scaling, &promise(), now).unwrap();
        assert_eq!(got.wscale, None);
    }

    #[test]
    fn ecn_follows_tcp_ecn_create_request() {
        let syn = opts(&LINUX_SYN);
        let ts = config(flags::TIMESTAMPS);
        let ecn = |e: SynEcn, host: &HostFacts| {
            negotiate(&syn, e, &ts, host, &promise(), 5).map(|o| o.ecn)
        };
        assert_eq!(ecn(ECN_SETUP, &host()), Ok(true));
        let ect = SynEcn {
            ip_tos: 2,
            ..ECN_SETUP
        };
        assert_eq!(ecn(ect, &host()), Ok(false), "an ECT SYN is not ECN setup");
        let ect_ae = SynEcn {
            byte12: 0xa1,
            ..ect
        };
        assert_eq!(ecn(ect_ae, &host()), Ok(true));
        let off = HostFacts { ecn: 0, ..host() };
        assert_eq!(ecn(ECN_SETUP, &off), Ok(false));
        let accecn = HostFacts { ecn: 3, ..host() };
        assert_eq!(ecn(ECN_SETUP, &accecn), Err(Declined::AccurateEcn));
        assert_eq!(ecn(SynEcn::default(), &accecn), Ok(false));
        let ae_only = SynEcn {
            byte12: 0xa1,
            flags: 0x02,
            ip_tos: 0,
        };
        assert!(ae_only.any() && !ae_only.ece_and_cwr());
        assert_eq!(ecn(ae_only, &accecn), Err(Declined::AccurateEcn));
    }

    #[test]
    fn without_timestamps_nothing_else_can_be_offered() {
        let no_ts = SynOptions {
            tsval: None,
            ..opts(&LINUX_SYN)
        };
        let bare = SynAckOptions {
            mss: 1460,
            sack_permitted: false,
            wscale: None,
            timestamp: None,
            ecn: false,
        };
        let ts = config(flags::TIMESTAMPS);
        assert_eq!(
            negotiate(&no_ts, ECN_SETUP, &ts, &host(), &promise(), 5),
            Ok(bare)
        );
        // The operator opted out of timestamps: same, even if the client offers them.
        let got = negotiate(
            &opts(&LINUX_SYN),
            ECN_SETUP,
            &config(0),
            &host(),
            &promise(),
            5,
        );
        assert_eq!(got, Ok(bare));
        // tcp_timestamps=0: the kernel ignores them; =1: its TSval has a secret offset.
        let off = HostFacts {
            timestamps: 0,
            ..host()
        };
        assert_eq!(
            negotiate(&opts(&LINUX_SYN), ECN_SETUP, &ts, &off, &promise(), 5),
            Ok(bare)
        );
        let offset = HostFacts {
            timestamps: 1,
            ..host()
        };
        assert_eq!(
            negotiate(&opts(&LINUX_SYN), ECN_SETUP, &ts, &offset, &promise(), 5),
            Err(Declined::TimestampOffset)
        );
        assert_eq!(
            negotiate(&no_ts, ECN_SETUP, &ts, &offset, &promise(), 5),
            Ok(bare),
            "no timestamps offered: nothing to offset"
        );
    }

    #[test]
    fn synack_bytes_and_checksum() {
        let synack = SynAck {
            src_port: 80,
            dst_port: 40000,
            seq: 0xdead_beef,
            ack: 0x1234_5679,
            window: 64240,
            options: SynAckOptions {
                mss: 1460,
                sack_permitted: true,
                wscale: Some(7),
                timestamp: Some((0x1111_1111, 0x2222_2222)),
                ecn: false,
            },
        };
        let src = [198, 18, 0, 1];
        let dst = [198, 18, 0, 2];
        let mut tcp = [0xaa; 40];
        assert_eq!(
            write_synack(&synack, checksum::pseudo_ipv4(&src, &dst, 40), &mut tcp),
            40
        );
        #[rustfmt::skip]
        let want_without_checksum: [u8; 40] = [
            0, 80, 0x9c, 0x40, 0xde, 0xad, 0xbe, 0xef, 0x12, 0x34, 0x56, 0x79,
            0xa0, 0x12, 0xfa, 0xf0, 0, 0, 0, 0,
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x22, 0x22,
            1, 3, 3, 7,
        ];
        assert_eq!(tcp[..16], want_without_checksum[..16]);
        assert_eq!(tcp[18..], want_without_checksum[18..]);
        // Verifying: the sum over pseudo-header and segment, checksum included, folds to 0.
        let verify = checksum::sum_words(checksum::pseudo_ipv4(&src, &dst, 40), &tcp);
        assert_eq!(checksum::fold(verify), 0);
    }

    #[test]
    fn without_timestamps_the_synack_carries_the_mss_only() {
        let synack = SynAck {
            src_port: 443,
            dst_port: 1,
            seq: 1,
            ack: 2,
            window: 1000,
            options: SynAckOptions {
                mss: 536,
                sack_permitted: false,
                wscale: None,
                timestamp: None,
                ecn: true,
            },
        };
        let mut tcp = [0xaa; 40];
        let src = [198, 18, 0, 1];
        let dst = [198, 18, 0, 2];
        let pseudo = checksum::pseudo_ipv4(&src, &dst, 24);
        assert_eq!(write_synack(&synack, pseudo, &mut tcp), 24, "MSS only");
        assert_eq!(tcp[12], 6 << 4, "data offset 6");
        assert_eq!(tcp[13], 0x12 | 0x40);
        assert_eq!(&tcp[20..24], &[2, 4, 0x02, 0x18]);
        assert!(
            tcp[24..40].iter().all(|&b| b == 0xaa),
            "nothing written past the header"
        );
        assert_eq!(checksum::fold(checksum::sum_words(pseudo, &tcp[..24])), 0);
    }

    #[test]
    fn cookie_probe_keeps_the_header_and_carries_one_mss_option() {
        let mut syn = [0u8; 20];
        syn[..4].copy_from_slice(&[0x9c, 0x40, 0, 80]);
        syn[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        syn[12] = 0xa0;
        syn[13] = 0x02;
        let probe = |mss, ipv6| {
            let mut probe = [0xaa; 24];
            write_cookie_probe(&mut probe, &syn, mss, ipv6);
            probe
        };
        let with_mss = probe(Some(1460), false);
        assert_eq!(&with_mss[..12], &syn[..12]);
        assert_eq!(with_mss[12], 0x60, "data offset 6");
        assert_eq!(
            &with_mss[13..20],
            &syn[13..20],
            "still a SYN, the rest as it was"
        );
        assert_eq!(&with_mss[20..], &[2, 4, 0x05, 0xb4]);
        assert_eq!(&probe(None, false)[20..], &[2, 4, 0x02, 0x18]);
        assert_eq!(&probe(None, true)[20..], &[2, 4, 0x04, 0xc4]);
    }

    #[test]
    fn timestamps_without_window_scale_take_36_bytes_like_the_kernel() {
        let synack = SynAck {
            src_port: 80,
            dst_port: 40000,
            seq: 1,
            ack: 2,
            window: 65160,
            options: SynAckOptions {
                mss: 1460,
                sack_permitted: false,
                wscale: None,
                timestamp: Some((0x1111_1111, 0x2222_2222)),
                ecn: false,
            },
        };
        let src = [198, 18, 0, 1];
        let dst = [198, 18, 0, 2];
        let pseudo = checksum::pseudo_ipv4(&src, &dst, 36);
        let mut tcp = [0xaa; 40];
        assert_eq!(write_synack(&synack, pseudo, &mut tcp), 36);
        assert_eq!(tcp[12], 9 << 4, "data offset 9");
        assert_eq!(&tcp[20..28], &[2, 4, 0x05, 0xb4, 1, 1, 8, 10]);
        assert_eq!(&tcp[36..], &[0xaa; 4], "no padding after the timestamp");
        assert_eq!(checksum::fold(checksum::sum_words(pseudo, &tcp[..36])), 0);
    }

    const IP: SynAckIp = SynAckIp {
        tos: 0x28,
        ttl: 64,
        dont_fragment: true,
        id: 0,
    };

    #[test]
    fn ip_headers() {
        let mut ip = [0xaa; 20];
        write_ipv4_header(&mut ip, [198, 18, 0, 1], [198, 18, 0, 2], IP, 40);
        assert_eq!(ip[0], 0x45);
        assert_eq!(ip[1], 0x28);
        assert_eq!(&ip[4..8], &[0, 0, 0x40, 0], "DF, ID 0");
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 60);
        assert_eq!(
            checksum::fold(checksum::sum_words(0, &ip)),
            0,
            "valid checksum"
        );
        let no_df = SynAckIp {
            dont_fragment: false,
            id: 0x1234,
            ..IP
        };
        write_ipv4_header(&mut ip, [198, 18, 0, 1], [198, 18, 0, 2], no_df, 40);
        assert_eq!(&ip[4..8], &[0x12, 0x34, 0, 0]);
        assert_eq!(checksum::fold(checksum::sum_words(0, &ip)), 0);
        let mut ip6 = [0xaa; 40];
        write_ipv6_header(&mut ip6, &[1; 16], &[2; 16], IP, 40);
        assert_eq!(
            &ip6[0..4],
            &[0x62, 0x80, 0, 0],
            "traffic class 0x28, flow label 0"
        );
        assert_eq!(ip6[0] >> 4, 6);
        assert_eq!(u16::from_be_bytes([ip6[4], ip6[5]]), 40);
        assert_eq!(ip6[6], 6);
    }
}
