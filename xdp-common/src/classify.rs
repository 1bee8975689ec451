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
    /// IPv6 with an extension header before the payload. Not parsed (yet), so never read as TCP.
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
            Class::Fragment => "ipv4_fragment",
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

/// What follows an IPv6 fixed header, by its Next Header value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6Next {
    Tcp,
    /// An extension header (RFC 8200, section 4, and the IANA "IPv6 Extension Header Types"
    /// registry). TCP may follow it, so it must not be taken for a non-TCP payload either.
    Extension,
    Other,
}

pub const IPPROTO_TCP: u8 = 6;

pub const fn ipv6_next(next_header: u8) -> Ipv6Next {
    match next_header {
        IPPROTO_TCP => Ipv6Next::Tcp,
        // Hop-by-hop, Routing, Fragment, AH, Destination options, Mobility, HIP, Shim6, and the
        // two experimental values. ESP (50) is left out on purpose: what follows it is
        // encrypted, so for us it is an opaque non-TCP payload.
        0 | 43 | 44 | 51 | 60 | 135 | 139 | 140 | 253 | 254 => Ipv6Next::Extension,
        _ => Ipv6Next::Other,
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
        for nh in [0, 43, 44, 51, 60, 135, 139, 140, 253, 254] {
            assert_eq!(ipv6_next(nh), Ipv6Next::Extension, "next header {nh}");
        }
        for nh in [17, 58, 50, 59, 132] {
            assert_eq!(ipv6_next(nh), Ipv6Next::Other, "next header {nh}");
        }
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
