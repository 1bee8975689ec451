//! The per-CPU counters the XDP program keeps and the controller reads at scrape time.

use crate::classify::Class;

/// What the XDP program did with a packet (the program's return code, by name).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Handed to the kernel's stack (XDP_PASS).
    Pass = 0,
    /// Dropped in XDP (XDP_DROP).
    Drop = 1,
    /// Answered from XDP on the same interface (XDP_TX).
    Tx = 2,
    /// The program hit an internal error, e.g. a map lookup that cannot fail did (XDP_ABORTED).
    Aborted = 3,
}

impl Action {
    pub const COUNT: usize = 4;

    pub const ALL: [Action; Action::COUNT] =
        [Action::Pass, Action::Drop, Action::Tx, Action::Aborted];

    /// The XDP return code for this action (`enum xdp_action` in include/uapi/linux/bpf.h).
    pub const fn xdp_code(self) -> u32 {
        match self {
            Action::Aborted => 0,
            Action::Drop => 1,
            Action::Pass => 2,
            Action::Tx => 3,
        }
    }

    /// The label value used in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Drop => "drop",
            Action::Tx => "tx",
            Action::Aborted => "aborted",
        }
    }
}

/// Why the program did what it did with a SYN or an ACK to a protected port. Counted on top of
/// the class/action counters, once per decision.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// SYN answered with a cookie from the socket-less helper.
    CookieRaw = 0,
    /// SYN answered with a cookie from `bpf_tcp_gen_syncookie`, which also stamps the
    /// listener's overflow time so the kernel accepts cookies (once a second per listener).
    CookieStamped = 1,
    /// SYN passed: no listener on its address and port.
    SynNoListener = 2,
    /// SYN passed: a socket for its 4-tuple exists (established, TIME_WAIT, or a handshake the
    /// kernel is doing itself).
    SynExistingSocket = 3,
    /// SYN passed: the kernel's cookie helper declined (e.g. tcp_syncookies is 0).
    SynHelperDeclined = 4,
    /// SYN passed: the frame could not be resized for the SYN-ACK.
    SynResizeFailed = 5,
    /// SYN not answered: IPv4 options the kernel would echo in its SYN-ACK (Record Route,
    /// Timestamp, a source route, CIPSO), or options it rejects. Dropped in `cookie` mode and
    /// during an attack: passing them would let a flood that adds one such option past
    /// synguard.
    SynIpOptions = 6,
    /// SYN passed: its port is not protected.
    SynUnprotectedPort = 7,
    /// SYN passed: `auto` mode, rate below the threshold.
    SynBelowThreshold = 8,
    /// `monitor` mode: `cookie` mode would have answered this SYN.
    MonitorWouldAnswer = 9,
    /// ACK passed: it belongs to a socket.
    AckEstablished = 10,
    /// ACK passed: it carries a valid cookie; the kernel builds the connection.
    AckCookieValid = 11,
    /// ACK dropped: no socket and no valid cookie (a forged ACK).
    AckForged = 12,
    /// `monitor` mode: `cookie` mode would have dropped this ACK, or this packet from a denied
    /// source.
    MonitorWouldDrop = 13,
    /// Passed: the source's longest matching prefix is on the allow list.
    ListAllowed = 14,
    /// Dropped: the source's longest matching prefix is on the deny list.
    ListDenied = 15,
    /// SYN dropped: it would have gone to the kernel, over the cap of passed SYNs.
    SynPassCapped = 16,
    /// SYN dropped: answering it would exceed the cap of SYN-ACKs sent.
    SynAckCapped = 17,
    /// SYN dropped: its source prefix is over its SYN rate limit.
    SynSourceLimited = 18,
    /// SYN passed: the host's facts a SYN-ACK depends on are not known yet, or routes to
    /// different clients differ in what they would make the kernel promise.
    SynHostUnknown = 19,
    /// SYN passed: the listener's settings could not be read from the kernel.
    SynListenerUnknown = 20,
    /// SYN passed: `tcp_timestamps=1` and the client offers timestamps; the kernel's TSval
    /// carries a secret per-connection offset that a cookie SYN-ACK cannot match.
    SynTimestampOffset = 21,
    /// SYN passed: `tcp_ecn` allows Accurate ECN and the SYN sets an ECN flag.
    SynAccurateEcn = 22,
    /// SYN or cookie-checked segment in the first of several fragments (no handshake segment
    /// is fragmented legitimately): dropped in `cookie` mode and during an attack.
    TcpFragment = 23,
    /// IPv6 extension headers synguard cannot walk to the payload (unknown kinds, too many or
    /// too long, malformed, a routing header with segments left): the port cannot be read, so
    /// in `cookie` mode and during an attack the packet is dropped.
    Ipv6Unjudged = 24,
    /// SYN or cookie-checked segment passed: its destination is not a unicast address of this
    /// host (another host's, a broadcast or multicast address, a group MAC). The kernel would
    /// forward or drop it, never answer it, so neither does synguard.
    NotLocal = 25,
    /// SYN answered with a cookie from the socket-less helper without a socket lookup: its
    /// source cannot own a socket, and this CPU found the destination's listener within the
    /// last 10 ms (the fast path, docs/design.md).
    CookieNoLookup = 26,
}

impl Reason {
    pub const COUNT: usize = 27;

    pub const ALL: [Reason; Reason::COUNT] = [
        Reason::CookieRaw,
        Reason::CookieStamped,
        Reason::SynNoListener,
        Reason::SynExistingSocket,
        Reason::SynHelperDeclined,
        Reason::SynResizeFailed,
        Reason::SynIpOptions,
        Reason::SynUnprotectedPort,
        Reason::SynBelowThreshold,
        Reason::MonitorWouldAnswer,
        Reason::AckEstablished,
        Reason::AckCookieValid,
        Reason::AckForged,
        Reason::MonitorWouldDrop,
        Reason::ListAllowed,
        Reason::ListDenied,
        Reason::SynPassCapped,
        Reason::SynAckCapped,
        Reason::SynSourceLimited,
        Reason::SynHostUnknown,
        Reason::SynListenerUnknown,
        Reason::SynTimestampOffset,
        Reason::SynAccurateEcn,
        Reason::TcpFragment,
        Reason::Ipv6Unjudged,
        Reason::NotLocal,
        Reason::CookieNoLookup,
    ];

    /// The label value used in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::CookieRaw => "cookie_sent",
            Reason::CookieStamped => "cookie_sent_stamped",
            Reason::SynNoListener => "syn_no_listener",
            Reason::SynExistingSocket => "syn_existing_socket",
            Reason::SynHelperDeclined => "syn_helper_declined",
            Reason::SynResizeFailed => "syn_resize_failed",
            Reason::SynIpOptions => "syn_ip_options",
            Reason::SynUnprotectedPort => "syn_unprotected_port",
            Reason::SynBelowThreshold => "syn_below_threshold",
            Reason::MonitorWouldAnswer => "monitor_would_answer",
            Reason::AckEstablished => "ack_established",
            Reason::AckCookieValid => "ack_cookie_valid",
            Reason::AckForged => "ack_forged",
            Reason::MonitorWouldDrop => "monitor_would_drop",
            Reason::ListAllowed => "list_allowed",
            Reason::ListDenied => "list_denied",
            Reason::SynPassCapped => "syn_pass_capped",
            Reason::SynAckCapped => "synack_capped",
            Reason::SynSourceLimited => "syn_source_limited",
            Reason::SynHostUnknown => "syn_host_unknown",
            Reason::SynListenerUnknown => "syn_listener_unknown",
            Reason::SynTimestampOffset => "syn_timestamp_offset",
            Reason::SynAccurateEcn => "syn_accurate_ecn",
            Reason::TcpFragment => "tcp_fragment",
            Reason::Ipv6Unjudged => "ipv6_ext_unjudged",
            Reason::NotLocal => "not_local",
            Reason::CookieNoLookup => "cookie_sent_no_lookup",
        }
    }
}

/// One CPU's counters: packets and bytes by class and by the action taken on them.
///
/// It lives in a one-slot per-CPU array, so the XDP program updates it without atomics, and
/// the controller sums the CPUs when it is scraped.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    pub packets: [[u64; Action::COUNT]; Class::COUNT],
    pub bytes: [[u64; Action::COUNT]; Class::COUNT],
    pub reasons: [u64; Reason::COUNT],
    /// Sources that earned an exact per-source bucket (`crate::limit`).
    pub sources_metered: u64,
}

// A map value crosses the user/kernel boundary byte for byte: no implicit padding, fixed size.
const _: () =
    assert!(size_of::<Stats>() == (2 * Class::COUNT * Action::COUNT + Reason::COUNT + 1) * 8);

impl Stats {
    pub const ZERO: Stats = Stats {
        packets: [[0; Action::COUNT]; Class::COUNT],
        bytes: [[0; Action::COUNT]; Class::COUNT],
        reasons: [0; Reason::COUNT],
        sources_metered: 0,
    };

    /// One packet of `class` and `len` bytes, with `action` and no reason.
    pub fn record(&mut self, class: Class, action: Action, len: u64) {
        self.record_at(class as usize, action as usize, Reason::COUNT, len);
    }

    /// A packet and its reason by index, as the XDP program's last stage counts them: indexes
    /// out of range count nothing (a reason of `Reason::COUNT` or more is none).
    #[inline(always)]
    pub fn record_at(&mut self, class: usize, action: usize, reason: usize, len: u64) {
        if let Some(row) = self.packets.get_mut(class)
            && let Some(cell) = row.get_mut(action)
        {
            *cell += 1;
        }
        if let Some(row) = self.bytes.get_mut(class)
            && let Some(cell) = row.get_mut(action)
        {
            *cell += len;
        }
        if let Some(cell) = self.reasons.get_mut(reason) {
            *cell += 1;
        }
    }

    pub fn record_reason(&mut self, reason: Reason) {
        self.reasons[reason as usize] += 1;
    }

    pub fn reason(&self, reason: Reason) -> u64 {
        self.reasons[reason as usize]
    }

    pub fn packets(&self, class: Class, action: Action) -> u64 {
        self.packets[class as usize][action as usize]
    }

    pub fn bytes(&self, class: Class, action: Action) -> u64 {
        self.bytes[class as usize][action as usize]
    }

    /// All packets of one class, whatever was done with them.
    pub fn class_packets(&self, class: Class) -> u64 {
        self.packets[class as usize].iter().sum()
    }

    /// Adds another CPU's counters to these (wrapping, as the kernel's counters do).
    pub fn accumulate(&mut self, other: &Stats) {
        for (mine, theirs) in self.packets.iter_mut().zip(other.packets.iter()) {
            for (a, b) in mine.iter_mut().zip(theirs.iter()) {
                *a = a.wrapping_add(*b);
            }
        }
        for (mine, theirs) in self.bytes.iter_mut().zip(other.bytes.iter()) {
            for (a, b) in mine.iter_mut().zip(theirs.iter()) {
                *a = a.wrapping_add(*b);
            }
        }
        for (a, b) in self.reasons.iter_mut().zip(other.reasons.iter()) {
            *a = a.wrapping_add(*b);
        }
        self.sources_metered = self.sources_metered.wrapping_add(other.sources_metered);
    }
}

#[cfg(feature = "user")]
// SAFETY: `Stats` is `repr(C)`, made only of `u64`s (no padding, every bit pattern valid).
unsafe impl aya::Pod for Stats {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_table_is_consistent() {
        for (i, action) in Action::ALL.iter().enumerate() {
            assert_eq!(*action as usize, i);
        }
        // Values from include/uapi/linux/bpf.h, enum xdp_action.
        assert_eq!(Action::Aborted.xdp_code(), 0);
        assert_eq!(Action::Drop.xdp_code(), 1);
        assert_eq!(Action::Pass.xdp_code(), 2);
        assert_eq!(Action::Tx.xdp_code(), 3);
    }

    #[test]
    fn reason_table_is_consistent() {
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i);
            assert!(
                !Reason::ALL[..i].iter().any(|r| r.name() == reason.name()),
                "duplicate label {}",
                reason.name()
            );
        }
    }

    #[test]
    fn record_and_accumulate_sum_per_cell() {
        let mut cpu0 = Stats::ZERO;
        cpu0.record(Class::Syn, Action::Pass, 54);
        cpu0.record(Class::Syn, Action::Pass, 60);
        cpu0.record(Class::Ack, Action::Drop, 54);
        let mut cpu1 = Stats::ZERO;
        cpu1.record(Class::Syn, Action::Tx, 74);
        cpu1.record_reason(Reason::CookieRaw);
        cpu1.packets[Class::NonIp as usize][Action::Pass as usize] = u64::MAX;

        let mut total = Stats::ZERO;
        total.accumulate(&cpu0);
        total.accumulate(&cpu1);
        total.accumulate(&cpu1);
        assert_eq!(total.packets(Class::Syn, Action::Pass), 2);
        assert_eq!(total.bytes(Class::Syn, Action::Pass), 114);
        assert_eq!(total.packets(Class::Syn, Action::Tx), 2);
        assert_eq!(total.class_packets(Class::Syn), 4);
        assert_eq!(total.packets(Class::Ack, Action::Drop), 1);
        assert_eq!(total.reason(Reason::CookieRaw), 2);
        assert_eq!(
            total.packets(Class::NonIp, Action::Pass),
            u64::MAX - 1,
            "wraps"
        );
    }
}
