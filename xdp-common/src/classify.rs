//! Packet classes, and the decisions that turn header fields into a class.
//!
//! The XDP program reads the fields from packet memory and calls these functions, so the rules
//! themselves are tested on the host.

/// What a packet is, as far as synguard is concerned. Every packet gets exactly one class.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Not IPv4 or IPv6 (ARP, LLDP, more than two VLAN tags, ...).
    NonIp = 0,
    /// IP, but not TCP (UDP, ICMP, ICMPv6, ...).
    NonTcp = 1,
    /// An IPv4 fragment other than the first: it carries no TCP header to read.
    Fragment = 2,
    /// IPv6 whose extension headers synguard cannot walk to the payload: a header it does not
    /// walk, more than `MAX_IPV6_EXT_HEADERS`, a malformed one, or a routing header with
    /// segments left (the packet is not for this host yet).
    Ipv6Ext = 3,
    /// SYN without ACK: a connection attempt.
    Syn = 4,
    SynAck = 5,
    /// ACK with none of SYN, FIN or RST (PSH, URG, ECE and CWR may be set).
    Ack = 6,
    /// RST without SYN.
    Rst = 7,
    /// FIN without SYN or RST.
    Fin = 8,
    /// TCP with a flag combination that fits none of the above (null, SYN+FIN, SYN+RST, ...).
    OtherTcp = 9,
    /// Truncated or inconsistent headers: too short for a header, bad IHL or data offset,
    /// lengths that point past the end of the frame.
    Malformed = 10,
}

impl Class {
    pub const COUNT: usize = 11;

    pub const ALL: [Class; Class::COUNT] = [
        Class::NonIp,
        Class::NonTcp,
        Class::Fragment,
        Class::Ipv6Ext,
        Class::Syn,
        Class::SynAck,
        Class::Ack,
        Class::Rst,
        Class::Fin,
        Class::OtherTcp,
        Class::Malformed,
    ];

    /// The label value used in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Class::NonIp => "non_ip",
            Class::NonTcp => "non_tcp",
            Class::Fragment => "fragment",
            Class::Ipv6Ext => "ipv6_ext_header",
            Class::Syn => "syn",
            Class::SynAck => "syn_ack",
            Class::Ack => "ack",
            Class::Rst => "rst",
            Class::Fin => "fin",
            Class::OtherTcp => "other_tcp",
            Class::Malformed => "malformed",
        }
    }
}

/// TCP flag bits, as in byte 13 of the TCP header (RFC 9293, section 3.1).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// Classifies a well-formed TCP segment by its flags byte.
pub const fn classify_tcp_flags(flags: u8) -> Class {
    use tcp_flags::{ACK, FIN, RST, SYN};
    let syn = flags & SYN != 0;
    let ack = flags & ACK != 0;
    let rst = flags & RST != 0;
    let fin = flags & FIN != 0;
    match (syn, rst, fin, ack) {
        (true, false, false, false) => Class::Syn,
        (true, false, false, true) => Class::SynAck,
        // SYN with RST or FIN is never a valid segment; it is a scan or an attack.
        (true, _, _, _) => Class::OtherTcp,
        (false, true, _, _) => Class::Rst,
        (false, false, true, _) => Class::Fin,
        (false, false, false, true) => Class::Ack,
        (false, false, false, false) => Class::OtherTcp,
    }
}

/// Whether the kernel checks this segment for a cookie when it reaches a listener: ACK set, SYN
/// and RST clear (`tcp_v4_cookie_check()` skips SYNs; `cookie_v4_check()` and
/// `cookie_v6_check()` give up on `!th->ack || th->rst`). FIN+ACK, PSH+ACK and URG+ACK are
/// checked as a bare ACK is, so the forged-ACK check judges all of them.
pub const fn cookie_checked(flags: u8) -> bool {
    use tcp_flags::{ACK, RST, SYN};
    flags & ACK != 0 && flags & (SYN | RST) == 0
}

/// What follows an IPv6 fixed header or extension header, by its Next Header value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6Next {
    Tcp,
    /// An extension header synguard walks to find what follows it: Hop-by-Hop Options (0),
    /// Routing (43), Fragment (44), Authentication (51) and Destination Options (60), the
    /// headers the kernel itself walks before TCP (`ipv6_skip_exthdr()`,
    /// net/ipv6/exthdrs_core.c).
    Walk,
    /// An extension header it does not walk (Mobility, HIP, Shim6, the experimental values;
    /// RFC 8200, section 4, and the IANA registry): TCP may follow, so what follows cannot be
    /// judged, and must not be taken for a non-TCP payload either.
    Unwalkable,
    /// Anything else, ESP (50) included: what follows it is encrypted, an opaque payload.
    Other,
}

pub const IPPROTO_TCP: u8 = 6;
pub const IPV6_ROUTING: u8 = 43;
pub const IPV6_FRAGMENT: u8 = 44;
pub const IPV6_AH: u8 = 51;

/// How many IPv6 extension headers synguard walks before TCP. A legitimate handshake segment
/// carries at most a few (Hop-by-Hop, Destination Options, a Fragment header when atomic);
/// a longer chain is counted as `Ipv6Ext` and, on the way to a protected port during an
/// attack, dropped: it cannot be judged.
pub const MAX_IPV6_EXT_HEADERS: usize = 4;

pub const fn ipv6_next(next_header: u8) -> Ipv6Next {
    match next_header {
        IPPROTO_TCP => Ipv6Next::Tcp,
        0 | IPV6_ROUTING | IPV6_FRAGMENT | IPV6_AH | 60 => Ipv6Next::Walk,
        135 | 139 | 140 | 253 | 254 => Ipv6Next::Unwalkable,
        _ => Ipv6Next::Other,
    }
}

/// The length of a walked extension header, from its type and its second byte (RFC 8200,
/// section 4.3 to 4.6: 8-octet units not counting the first; RFC 4302, section 2.2: AH counts
/// 4-octet units, less 2; the Fragment header is always 8).
pub const fn ipv6_ext_len(kind: u8, length_byte: u8) -> usize {
    match kind {
        IPV6_FRAGMENT => 8,
        IPV6_AH => (length_byte as usize + 2) * 4,
        _ => (length_byte as usize + 1) * 8,
    }
}

/// What an IPv6 Fragment header says, from its offset-and-flags field (host order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6Fragment {
    /// Offset 0, no more fragments: the whole packet (RFC 6946); judged as if unfragmented,
    /// as the kernel does (`ipv6_frag_rcv()`, net/ipv6/reassembly.c).
    Atomic,
    /// Offset 0 with more to come: the headers are here, the packet is not whole.
    First,
    /// A later fragment: no transport header.
    Later,
}

pub const fn ipv6_fragment(offset_and_flags: u16) -> Ipv6Fragment {
    match (offset_and_flags >> 3, offset_and_flags & 1) {
        (0, 0) => Ipv6Fragment::Atomic,
        (0, _) => Ipv6Fragment::First,
        _ => Ipv6Fragment::Later,
    }
}

/// True for an IPv4 packet that is the first of several fragments (More Fragments set, offset
/// 0), given the host-order flags/offset field.
pub const fn ipv4_is_first_fragment(flags_and_offset: u16) -> bool {
    flags_and_offset & 0x2000 != 0 && flags_and_offset & 0x1fff == 0
}

/// What one IPv4 option at `at` of `options[..len]` means for a SYN's answer, as the kernel
/// reads options (`ip_options_compile()`, net/ipv4/ip_options.c) and echoes them in its
/// SYN-ACK (`__ip_options_echo()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv4OptionStep {
    /// The next option starts there.
    Next(usize),
    /// End of the option list.
    End,
    /// Record Route, Timestamp, a source route or CIPSO: the kernel would echo it in its
    /// SYN-ACK (a source route reversed), which synguard does not build.
    Echoed,
    /// A length the kernel rejects: it drops the packet itself (IPSTATS_MIB_INHDRERRORS).
    Malformed,
}

pub const IPOPT_END: u8 = 0;
pub const IPOPT_NOOP: u8 = 1;
pub const IPOPT_RR: u8 = 7;
pub const IPOPT_TIMESTAMP: u8 = 68;
pub const IPOPT_LSRR: u8 = 131;
pub const IPOPT_CIPSO: u8 = 134;
pub const IPOPT_SSRR: u8 = 137;
pub const IPOPT_RA: u8 = 148;

pub fn ipv4_option_at(options: &[u8], len: usize, at: usize) -> Ipv4OptionStep {
    let len = if len < options.len() {
        len
    } else {
        options.len()
    };
    let Some(&kind) = options.get(at).filter(|_| at < len) else {
        return Ipv4OptionStep::End;
    };
    match kind {
        IPOPT_END => return Ipv4OptionStep::End,
        IPOPT_NOOP => return Ipv4OptionStep::Next(at + 1),
        _ => {}
    }
    let Some(&option_len) = options.get(at + 1).filter(|_| at + 1 < len) else {
        return Ipv4OptionStep::Malformed;
    };
    let option_len = option_len as usize;
    if option_len < 2 || at + option_len > len {
        return Ipv4OptionStep::Malformed;
    }
    match kind {
        IPOPT_RR | IPOPT_TIMESTAMP | IPOPT_LSRR | IPOPT_SSRR | IPOPT_CIPSO => {
            Ipv4OptionStep::Echoed
        }
        IPOPT_RA if option_len != 4 => Ipv4OptionStep::Malformed,
        // Router Alert, and kinds the kernel ignores on received packets.
        _ => Ipv4OptionStep::Next(at + option_len),
    }
}

/// True for an IPv4 fragment that is not the first one, given the host-order flags/offset field.
/// Such a fragment has no transport header: its payload continues an earlier one.
pub const fn ipv4_is_later_fragment(flags_and_offset: u16) -> bool {
    flags_and_offset & 0x1fff != 0
}

#[cfg(test)]
mod tests {
    use super::tcp_flags::*;
    use super::*;

    #[test]
    fn flags_classify_as_documented() {
        let cases = [
            (SYN, Class::Syn),
            (SYN | ECE | CWR, Class::Syn),
            (SYN | ACK, Class::SynAck),
            (SYN | ACK | ECE, Class::SynAck),
            (ACK, Class::Ack),
            (ACK | PSH, Class::Ack),
            (ACK | URG | PSH, Class::Ack),
            (RST, Class::Rst),
            (RST | ACK, Class::Rst),
            (FIN, Class::Fin),
            (FIN | ACK, Class::Fin),
            (FIN | ACK | PSH, Class::Fin),
            (0, Class::OtherTcp),
            (PSH, Class::OtherTcp),
            (URG | PSH | FIN, Class::Fin),
            (SYN | FIN, Class::OtherTcp),
            (SYN | RST, Class::OtherTcp),
            (SYN | RST | ACK, Class::OtherTcp),
            (0xff, Class::OtherTcp),
        ];
        for (flags, want) in cases {
            assert_eq!(classify_tcp_flags(flags), want, "flags {flags:#04x}");
        }
    }

    #[test]
    fn the_cookie_checked_segments_are_the_acks_and_the_fin_acks() {
        use tcp_flags::ACK;
        for flags in 0..=u8::MAX {
            let class = classify_tcp_flags(flags);
            let want = class == Class::Ack || (class == Class::Fin && flags & ACK != 0);
            assert_eq!(cookie_checked(flags), want, "flags {flags:#04x}");
        }
    }

    #[test]
    fn every_flag_byte_has_exactly_one_tcp_class() {
        for flags in 0..=u8::MAX {
            let class = classify_tcp_flags(flags);
            assert!(
                !matches!(
                    class,
                    Class::NonIp
                        | Class::NonTcp
                        | Class::Fragment
                        | Class::Ipv6Ext
                        | Class::Malformed
                ),
                "flags {flags:#04x} gave {class:?}"
            );
        }
    }

    #[test]
    fn class_table_is_consistent() {
        for (i, class) in Class::ALL.iter().enumerate() {
            assert_eq!(*class as usize, i);
        }
        let mut names: [&str; Class::COUNT] = [""; Class::COUNT];
        for (i, class) in Class::ALL.iter().enumerate() {
            names[i] = class.name();
            assert!(
                !names[..i].contains(&class.name()),
                "duplicate label {}",
                class.name()
            );
        }
    }

    #[test]
    fn ipv6_extension_headers_are_not_tcp_and_not_other() {
        assert_eq!(ipv6_next(6), Ipv6Next::Tcp);
        for nh in [0, 43, 44, 51, 60] {
            assert_eq!(ipv6_next(nh), Ipv6Next::Walk, "next header {nh}");
        }
        for nh in [135, 139, 140, 253, 254] {
            assert_eq!(ipv6_next(nh), Ipv6Next::Unwalkable, "next header {nh}");
        }
        for nh in [17, 58, 50, 59, 132] {
            assert_eq!(ipv6_next(nh), Ipv6Next::Other, "next header {nh}");
        }
    }

    #[test]
    fn extension_header_lengths_and_fragments_read_as_rfc_8200_says() {
        assert_eq!(ipv6_ext_len(0, 0), 8);
        assert_eq!(ipv6_ext_len(60, 1), 16);
        assert_eq!(ipv6_ext_len(43, 2), 24);
        assert_eq!(
            ipv6_ext_len(44, 200),
            8,
            "the Fragment header has no length field"
        );
        assert_eq!(ipv6_ext_len(51, 4), 24, "AH: (4 + 2) 4-octet units");
        assert_eq!(ipv6_fragment(0), Ipv6Fragment::Atomic);
        assert_eq!(ipv6_fragment(0x0006), Ipv6Fragment::Atomic, "reserved bits");
        assert_eq!(ipv6_fragment(0x0001), Ipv6Fragment::First);
        assert_eq!(ipv6_fragment(0x0008), Ipv6Fragment::Later);
        assert_eq!(ipv6_fragment(0x0009), Ipv6Fragment::Later);
        assert!(ipv4_is_first_fragment(0x2000));
        assert!(ipv4_is_first_fragment(0x6000), "DF and MF together");
        assert!(!ipv4_is_first_fragment(0x4000), "DF alone: whole");
        assert!(!ipv4_is_first_fragment(0x2001), "a later one");
    }

    #[test]
    fn ipv4_options_are_read_as_the_kernel_reads_them() {
        use Ipv4OptionStep::*;
        let walk = |options: &[u8]| {
            let mut at = 0;
            loop {
                match ipv4_option_at(options, options.len(), at) {
                    Next(next) => at = next,
                    other => return other,
                }
            }
        };
        assert_eq!(walk(&[1, 1, 1, 1]), End, "four NOPs");
        assert_eq!(walk(&[148, 4, 0, 0]), End, "Router Alert");
        assert_eq!(walk(&[1, 148, 4, 0, 0, 0, 0, 0]), End, "NOP, RA, then EOL");
        assert_eq!(walk(&[0, 7, 7, 7]), End, "EOL first: the rest is padding");
        assert_eq!(
            walk(&[130, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            End,
            "ignored kind"
        );
        assert_eq!(walk(&[7, 7, 4, 0, 0, 0, 0, 0]), Echoed, "Record Route");
        assert_eq!(
            walk(&[1, 68, 8, 5, 0, 0, 0, 0, 0, 0, 0, 0]),
            Echoed,
            "Timestamp"
        );
        assert_eq!(
            walk(&[131, 7, 4, 1, 2, 3, 4, 0]),
            Echoed,
            "loose source route"
        );
        assert_eq!(
            walk(&[137, 7, 4, 1, 2, 3, 4, 0]),
            Echoed,
            "strict source route"
        );
        assert_eq!(walk(&[134, 6, 0, 0, 0, 1, 0, 0]), Echoed, "CIPSO");
        assert_eq!(walk(&[148, 3, 0, 1]), Malformed, "Router Alert is 4 long");
        assert_eq!(walk(&[99, 1, 0, 0]), Malformed, "length 1");
        assert_eq!(walk(&[99, 0, 0, 0]), Malformed, "length 0");
        assert_eq!(walk(&[1, 1, 1, 99]), Malformed, "no length byte");
        assert_eq!(
            walk(&[99, 9, 0, 0, 0, 0, 0, 0]),
            Malformed,
            "past the header"
        );
        assert_eq!(walk(&[]), End);
        // `len` bounds the walk, whatever the buffer holds after it.
        assert_eq!(ipv4_option_at(&[1, 7, 7, 4], 1, 1), End);
    }

    #[test]
    fn only_non_first_fragments_lack_a_transport_header() {
        assert!(!ipv4_is_later_fragment(0x0000));
        assert!(!ipv4_is_later_fragment(0x4000), "DF alone");
        assert!(
            !ipv4_is_later_fragment(0x2000),
            "MF with offset 0 is the first fragment"
        );
        assert!(ipv4_is_later_fragment(0x0001));
        assert!(ipv4_is_later_fragment(0x2000 | 0x00b9));
        assert!(ipv4_is_later_fragment(0x1fff));
    }
}
