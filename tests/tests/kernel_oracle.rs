//! The kernel as the oracle: the same SYN (same 4-tuple, ISN and options) is answered once by
//! the kernel's own SYN cookies (`tcp_syncookies=2`, synguard in mode `off`) and once by
//! synguard (mode `cookie`), and the two SYN-ACKs must agree field by field, cookie included.
//!
//! Both are captured on the client's end of the lab's veth with an AF_PACKET socket, which also
//! sends the SYNs, so neither side's TCP stack shapes them. Exempt, because no one can
//! reproduce them: the IPv6 flow label (a hash of a random per-request value) and the high bits
//! of the TSval (the clock moved between the two sends; its low 6 bits, which carry the
//! options, must be equal). The cookie's time counter changes once a minute; a pair that
//! straddles it differs only in the cookie and is sent again.
//!
//! The matrix: client option layouts, listeners with their own settings, and host changes made
//! while synguard runs, each over IPv4 and IPv6.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicU16, Ordering},
    thread,
    time::{Duration, Instant},
};

use etherparse::{
    IpHeaders, IpNumber, Ipv4Header, NetHeaders, PacketBuilder, PacketHeaders, TcpHeader,
    TransportHeader,
};
use synguard_lab::{Lab, Netns, Synguard};
use synguard_tests::{cookie_lab, insert_ipv6_extensions, listen_with, succeeded, synguard_cli};

const ISN: u32 = 0x5a5a_1234;

/// Options as the client sends them (raw bytes, a multiple of 4).
#[derive(Clone, Copy, Debug)]
struct Layout {
    name: &'static str,
    options: &'static [u8],
    ece_cwr: bool,
    payload: &'static [u8],
    /// IPv4 options (a multiple of 4 bytes), for IPv4 SYNs.
    ip_options: &'static [u8],
    /// IPv6 extension headers, each `(next header value, bytes)`, for IPv6 SYNs.
    ipv6_ext: &'static [(u8, &'static [u8])],
}

/// Linux: MSS 1460, SACK-permitted, timestamps, NOP, window scale 7.
const LINUX: &[u8] = &[
    2, 4, 5, 180, 4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 1, 3, 3, 7,
];

const LAYOUTS: &[Layout] = &[
    Layout {
        name: "Linux",
        options: LINUX,
        ece_cwr: false,
        payload: &[],
        ip_options: &[],
        ipv6_ext: &[],
    },
    Layout {
        name: "Windows (no timestamps)",
        options: &[2, 4, 5, 180, 1, 3, 3, 8, 1, 1, 4, 2],
        ece_cwr: false,
        payload: &[],
        ip_options: &[],
        ipv6_ext: &[],
    },
    Layout {
        name: "macOS",
        options: &[
            2, 4, 5, 180, 1, 3, 3, 6, 1, 1, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 4, 2, 0, 0,
        ],
        ece_cwr: false,
        payload: &[],
        ip_options: &[],
        ipv6_ext: &[],
    },
    Layout {
        name: "hping3 (no options)",
        options: &[],
        ece_cwr: false,
        payload: &[],
        ip_options: &[],
        ipv6_ext: &[],
    },
    Layout {
        name: "MSS 500",
        options: &[
            2, 4, 1, 244, 4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 1, 3, 3, 7,
        ],
        ece_cwr: false,
        payload: &[],
        ip_options: &[],
        ipv6_ext: &[],
    },
    Layout {
        name: "MSS 9000",
        options: &[
            2, 4, 35, 40, 4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 1, 3, 3, 7,
        ],
        ece_cwr: false,
        payload: &[],
        ip_options: &[],
        ipv6_ext: &[],
    },
    Layout {
        name: "window scale 0",
        options: &[
            2, 4, 5, 180, 4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 1, 3, 3, 0,
        ],
        ece_cwr: false,
        payload: &[],
        ip_options: &[],
        ipv6_ext: &[],
    },
    Layout {
        name: "window scale 14",
        options: &[
            2, 4, 5, 180, 4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 1, 3, 3, 14,
        ],
        ece_cwr: false,
        payload: &[],
        ip_options: &[],
        ipv6_ext: &[],
    },
    Layout {
        name: "window scale 15",
        options: &[
            2, 4, 5, 180, 4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 1, 3, 3, 15,
        ],
        ece_cwr: false,
        payload: &[],
        ip_options: &[],
        ipv6_ext: &[],
    },
    Layout {
        name: "SACK without timestamps",
        options: &[2, 4, 5, 180, 1, 1, 4, 2],
        ece_cwr: false,
        payload: &[],
        ip_options: &[],
        ipv6_ext: &[],
    },
    Layout {
        name: "timestamps alone",
        options: &[1, 1, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0],
        ece_cwr: false,
        payload: &[],
        ip_options: &[],
        ipv6_ext: &[],
    },
    Layout {
        name: "unknown option kinds",
        options: &[
            99, 4, 0, 0, 2, 4, 5, 180, 4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 1, 3, 3, 7, 253, 2, 1,
            1,
        ],
        ece_cwr: false,
        payload: &[],
        ip_options: &[],
        ipv6_ext: &[],
    },
    Layout {
        name: "ECN setup (ECE+CWR)",
        options: LINUX,
        ece_cwr: true,
        payload: &[],
        ip_options: &[],
        ipv6_ext: &[],
    },
    Layout {
        name: "TFO cookie request",
        options: &[
            2, 4, 5, 180, 4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 1, 3, 3, 7, 34, 2, 1, 1,
        ],
        ece_cwr: false,
        payload: &[],
        ip_options: &[],
        ipv6_ext: &[],
    },
    Layout {
        name: "SYN with data",
        options: LINUX,
        ece_cwr: false,
        payload: &[0x61; 100],
        ip_options: &[],
        ipv6_ext: &[],
    },
    // Issue 16: a header in front of TCP must not let a SYN past synguard, and its SYN-ACK
    // must still be the kernel's own.
    Layout {
        name: "behind IP options (four NOPs; IPv6: Hop-by-Hop PadN)",
        options: LINUX,
        ece_cwr: false,
        payload: &[],
        ip_options: &[1, 1, 1, 1],
        ipv6_ext: &[(0, &[0, 0, 1, 4, 0, 0, 0, 0])],
    },
    Layout {
        name: "behind Router Alert (IPv6: Destination Options, atomic fragment)",
        options: LINUX,
        ece_cwr: false,
        payload: &[],
        ip_options: &[148, 4, 0, 0],
        ipv6_ext: &[
            (60, &[0, 0, 1, 4, 0, 0, 0, 0]),
            (44, &[0, 0, 0, 0, 0, 0, 0, 9]),
        ],
    },
];

const LINUX_LAYOUT: Layout = LAYOUTS[0];
const ECN_LAYOUT: Layout = LAYOUTS[12];

/// A listener's own settings: (level, option, value) for setsockopt before listen().
#[derive(Clone, Copy, Debug)]
struct ListenerKind {
    name: &'static str,
    v4: &'static [(i32, i32, i32)],
    v6: &'static [(i32, i32, i32)],
}

const SOL_SOCKET: i32 = libc::SOL_SOCKET;
const TCP: i32 = libc::IPPROTO_TCP;

const LISTENERS: &[ListenerKind] = &[
    ListenerKind {
        name: "default",
        v4: &[],
        v6: &[],
    },
    ListenerKind {
        name: "SO_RCVBUF 4 KiB",
        v4: &[(SOL_SOCKET, libc::SO_RCVBUF, 4096)],
        v6: &[(SOL_SOCKET, libc::SO_RCVBUF, 4096)],
    },
    ListenerKind {
        name: "SO_RCVBUF 64 KiB",
        v4: &[(SOL_SOCKET, libc::SO_RCVBUF, 65536)],
        v6: &[(SOL_SOCKET, libc::SO_RCVBUF, 65536)],
    },
    ListenerKind {
        name: "SO_RCVBUF 1 MiB",
        v4: &[(SOL_SOCKET, libc::SO_RCVBUF, 1 << 20)],
        v6: &[(SOL_SOCKET, libc::SO_RCVBUF, 1 << 20)],
    },
    ListenerKind {
        name: "SO_RCVBUF 16 MiB",
        v4: &[(SOL_SOCKET, libc::SO_RCVBUF, 16 << 20)],
        v6: &[(SOL_SOCKET, libc::SO_RCVBUF, 16 << 20)],
    },
    ListenerKind {
        name: "TCP_WINDOW_CLAMP 20000",
        v4: &[(TCP, libc::TCP_WINDOW_CLAMP, 20000)],
        v6: &[(TCP, libc::TCP_WINDOW_CLAMP, 20000)],
    },
    ListenerKind {
        name: "TCP_MAXSEG 1000",
        v4: &[(TCP, libc::TCP_MAXSEG, 1000)],
        v6: &[(TCP, libc::TCP_MAXSEG, 1000)],
    },
    ListenerKind {
        name: "IP_TOS 0x28, IPV6_TCLASS 0x28",
        v4: &[(libc::IPPROTO_IP, libc::IP_TOS, 0x28)],
        v6: &[(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, 0x28)],
    },
    ListenerKind {
        name: "IP_TTL 33, IPV6_UNICAST_HOPS 33",
        v4: &[(libc::IPPROTO_IP, libc::IP_TTL, 33)],
        v6: &[(libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, 33)],
    },
];

const FIRST_PORT: u16 = 8100;

/// An AF_PACKET socket on the client's end of the veth: sends frames as they are, and sees
/// every frame that arrives there.
struct Wire {
    fd: OwnedFd,
    if_index: i32,
    client: Netns,
    server: Netns,
}

impl Wire {
    fn open(lab: &Lab) -> Wire {
        let iface = lab.client.iface.clone();
        let (fd, if_index) = lab
            .client
            .enter(move || {
                // SAFETY: plain socket calls; the descriptor is owned by the OwnedFd.
                unsafe {
                    let fd = libc::socket(
                        libc::AF_PACKET,
                        libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                        (libc::ETH_P_ALL as u16).to_be() as i32,
                    );
                    assert!(fd >= 0, "AF_PACKET: {}", io::Error::last_os_error());
                    let fd = OwnedFd::from_raw_fd(fd);
                    let name = std::ffi::CString::new(iface).unwrap();
                    let if_index = libc::if_nametoindex(name.as_ptr()) as i32;
                    let mut addr: libc::sockaddr_ll = std::mem::zeroed();
                    addr.sll_family = libc::AF_PACKET as u16;
                    addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
                    addr.sll_ifindex = if_index;
                    let rc = libc::bind(
                        fd.as_raw_fd(),
                        &addr as *const _ as *const libc::sockaddr,
                        size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                    );
                    assert_eq!(rc, 0, "bind: {}", io::Error::last_os_error());
                    let timeout = libc::timeval {
                        tv_sec: 0,
                        tv_usec: 100_000,
                    };
                    libc::setsockopt(
                        fd.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_RCVTIMEO,
                        &timeout as *const _ as *const libc::c_void,
                        size_of::<libc::timeval>() as libc::socklen_t,
                    );
                    (fd, if_index)
                }
            })
            .unwrap();
        Wire {
            fd,
            if_index,
            client: lab.client.clone(),
            server: lab.server.clone(),
        }
    }

    /// A SYN from the client's address, or from another host of its network (`host`: the
    /// last byte of the address; 2 is the client itself).
    fn syn(&self, ipv6: bool, host: u8, client_port: u16, port: u16, layout: &Layout) -> Vec<u8> {
        let mut tcp = TcpHeader::new(client_port, port, ISN, 64240);
        tcp.syn = true;
        tcp.ece = layout.ece_cwr;
        tcp.cwr = layout.ece_cwr;
        tcp.set_options_raw(layout.options).unwrap();
        let eth = PacketBuilder::ethernet2(self.client.mac, self.server.mac);
        let mut frame = Vec::new();
        let (mut v4, mut v6) = (self.client.ipv4.octets(), self.client.ipv6.octets());
        v4[3] = host;
        v6[15] = host;
        if ipv6 {
            eth.ipv6(v6, self.server.ipv6.octets(), 64)
                .tcp_header(tcp)
                .write(&mut frame, layout.payload)
                .unwrap();
            insert_ipv6_extensions(&mut frame, 14, layout.ipv6_ext);
        } else {
            let mut ip =
                Ipv4Header::new(0, 64, IpNumber::TCP, v4, self.server.ipv4.octets()).unwrap();
            ip.dont_fragment = true;
            ip.options = layout.ip_options.try_into().unwrap();
            eth.ip(IpHeaders::Ipv4(ip, Default::default()))
                .tcp_header(tcp)
                .write(&mut frame, layout.payload)
                .unwrap();
        }
        frame
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: sendto with a valid buffer and link-layer address.
        unsafe {
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = self.if_index;
            addr.sll_halen = 6;
            addr.sll_addr[..6].copy_from_slice(&self.server.mac);
            let n = libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &addr as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            );
            assert_eq!(n, frame.len() as isize, "{}", io::Error::last_os_error());
        }
    }

    /// Sends `syn` and returns the SYN-ACK that answers it (to its source port), within 1 s.
    fn exchange(&self, syn: &[u8], client_port: u16) -> Option<Vec<u8>> {
        self.send(syn);
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut buf = vec![0u8; 2048];
        while Instant::now() < deadline {
            // SAFETY: recv into a buffer of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n <= 0 {
                continue;
            }
            let frame = &buf[..n as usize];
            let Ok(headers) = PacketHeaders::from_ethernet_slice(frame) else {
                continue;
            };
            if let Some(TransportHeader::Tcp(tcp)) = &headers.transport
                && tcp.syn
                && tcp.ack
                && tcp.destination_port == client_port
            {
                return Some(frame.to_vec());
            }
        }
        None
    }
}

/// The fields of a SYN-ACK that must agree, with the exemptions the module comment names.
#[derive(Debug, PartialEq, Eq)]
struct Fields {
    macs: ([u8; 6], [u8; 6]),
    ip: String,
    tcp: String,
    options: Vec<u8>,
    ts_low_bits: Option<u32>,
    cookie: u32,
}

/// `ours`: verify the TCP checksum too. The kernel's own SYN-ACK crosses the veth with a
/// partial checksum (checksum offload: the NIC would finish it), so its field is not compared.
fn fields(frame: &[u8], ours: bool) -> (Fields, Option<u32>) {
    let h = PacketHeaders::from_ethernet_slice(frame).expect("a SYN-ACK etherparse reads");
    let eth = match &h.link {
        Some(etherparse::LinkHeader::Ethernet2(e)) => (e.source, e.destination),
        other => panic!("not Ethernet: {other:?}"),
    };
    let Some(TransportHeader::Tcp(tcp)) = &h.transport else {
        panic!("no TCP header");
    };
    let ip = match &h.net {
        Some(NetHeaders::Ipv4(ip, _)) => {
            assert_eq!(
                ip.header_checksum,
                ip.calc_header_checksum(),
                "IPv4 checksum"
            );
            if ours {
                assert_eq!(
                    tcp.checksum,
                    tcp.calc_checksum_ipv4(ip, &[]).unwrap(),
                    "TCP checksum"
                );
            }
            // The identification is random when DF is clear (ip_build_and_send_pkt()).
            let id = if ip.dont_fragment {
                ip.identification
            } else {
                0
            };
            format!(
                "v4 dscp {} ecn {} len {} id {id} df {} mf {} frag {} ttl {} proto {} options {:?} {:?} -> {:?}",
                ip.dscp.value(),
                ip.ecn.value(),
                ip.total_len,
                ip.dont_fragment,
                ip.more_fragments,
                ip.fragment_offset.value(),
                ip.time_to_live,
                ip.protocol.0,
                ip.options.as_slice(),
                ip.source,
                ip.destination,
            )
        }
        Some(NetHeaders::Ipv6(ip, _)) => {
            if ours {
                assert_eq!(
                    tcp.checksum,
                    tcp.calc_checksum_ipv6(ip, &[]).unwrap(),
                    "TCP checksum"
                );
            }
            format!(
                "v6 tclass {:#x} len {} next {} hops {} {:?} -> {:?}",
                ip.traffic_class,
                ip.payload_length,
                ip.next_header.0,
                ip.hop_limit,
                ip.source,
                ip.destination,
            )
        }
        other => panic!("unexpected network header {other:?}"),
    };
    let mut options = tcp.options.as_slice().to_vec();
    let mut tsval = None;
    let mut ts_low_bits = None;
    // Blank the TSval (checked apart: low bits exactly, the rest near each other).
    let mut at = 0;
    while at < options.len() {
        match options[at] {
            0 => break,
            1 => at += 1,
            kind => {
                let len = options.get(at + 1).copied().unwrap_or(0) as usize;
                if len < 2 {
                    break;
                }
                if kind == 8 && len == 10 && at + 10 <= options.len() {
                    let val = u32::from_be_bytes(options[at + 2..at + 6].try_into().unwrap());
                    tsval = Some(val);
                    ts_low_bits = Some(val & 0x3f);
                    options[at + 2..at + 6].copy_from_slice(&[0; 4]);
                }
                at += len;
            }
        }
    }
    let flags = format!(
        "syn {} ack {} ece {} cwr {} rst {} fin {} psh {} urg {} ns {}",
        tcp.syn, tcp.ack, tcp.ece, tcp.cwr, tcp.rst, tcp.fin, tcp.psh, tcp.urg, tcp.ns
    );
    (
        Fields {
            macs: eth,
            ip,
            tcp: format!(
                "{} -> {} ack {} offset {} {flags} window {} urgent {} payload {}",
                tcp.source_port,
                tcp.destination_port,
                tcp.acknowledgment_number,
                tcp.data_offset(),
                tcp.window_size,
                tcp.urgent_pointer,
                h.payload.slice().len(),
            ),
            options,
            ts_low_bits,
            cookie: tcp.sequence_number,
        },
        tsval,
    )
}

/// The running synguard and the lab, and a way to hand each SYN to the kernel or to synguard.
struct Oracle {
    wire: Wire,
    iface: String,
    next_port: AtomicU16,
    _synguard: Synguard,
}

impl Oracle {
    fn mode(&self, mode: &str) {
        succeeded(&synguard_cli(&[
            "set",
            &format!("mode={mode}"),
            "--iface",
            &self.iface,
        ]));
    }

    /// One SYN from `host` (the last byte of an address in the client's network; 2 is the
    /// client) to `port`, answered by the kernel and then by synguard; `Err` describes the
    /// difference.
    fn compare_from(
        &self,
        what: &str,
        ipv6: bool,
        host: u8,
        port: u16,
        layout: &Layout,
    ) -> Result<(), String> {
        let mut last = String::new();
        for _attempt in 0..2 {
            let client_port = self.next_port.fetch_add(1, Ordering::Relaxed);
            let syn = self.wire.syn(ipv6, host, client_port, port, layout);
            // The kernel's own counter tells who answered: its cookie SYN-ACK counts, one sent
            // from XDP never reaches it (a SYN synguard passed would look like agreement).
            let sent = || self.wire.server.netstat("TcpExtSyncookiesSent").unwrap();
            self.mode("off");
            let before = sent();
            let kernel = self
                .wire
                .exchange(&syn, client_port)
                .ok_or_else(|| format!("{what}: the kernel sent no SYN-ACK"))?;
            if sent() != before + 1 {
                return Err(format!("{what}: the kernel's SYN-ACK was not its cookie"));
            }
            self.mode("cookie");
            let before = sent();
            let ours = self
                .wire
                .exchange(&syn, client_port)
                .ok_or_else(|| format!("{what}: synguard sent no SYN-ACK"))?;
            if sent() != before {
                return Err(format!(
                    "{what}: synguard passed the SYN and the kernel answered it"
                ));
            }
            let ((k, k_ts), (s, s_ts)) = (fields(&kernel, false), fields(&ours, true));
            if let (Some(a), Some(b)) = (k_ts, s_ts) {
                // Both from CLOCK_MONOTONIC in ms (tcp_timestamps=2), a few ms apart.
                let apart = b.wrapping_sub(a) as i32;
                if !(-64..=5000).contains(&apart) {
                    return Err(format!("{what}: TSval {b:#x} vs the kernel's {a:#x}"));
                }
            }
            if k == s {
                return Ok(());
            }
            last = format!("{what}:\n  kernel   {k:?}\n  synguard {s:?}");
            let same_but_cookie = Fields {
                cookie: k.cookie,
                ..s
            } == k;
            if !same_but_cookie {
                break;
            }
            // The cookie's minute counter moved between the two: once more.
        }
        Err(last)
    }
}

/// Restores a machine-wide sysctl (net.core.rmem_max is not per namespace) on drop.
struct GlobalSysctl {
    key: &'static str,
    original: String,
}

impl GlobalSysctl {
    fn set(key: &'static str, value: &str) -> GlobalSysctl {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let original = std::fs::read_to_string(&path).unwrap().trim().to_string();
        std::fs::write(&path, value).unwrap();
        GlobalSysctl { key, original }
    }
}

impl Drop for GlobalSysctl {
    fn drop(&mut self) {
        let path = format!("/proc/sys/{}", self.key.replace('.', "/"));
        let _ = std::fs::write(path, &self.original);
    }
}

#[test]
fn synguards_syn_acks_equal_the_kernels_own_cookie_syn_acks() {
    let lab = cookie_lab();
    let server = lab.server.clone();
    // One port per listener kind, IPv4 and IPv6 listeners on it.
    let listeners: Vec<std::net::TcpListener> = server
        .enter(|| {
            let mut fds = Vec::new();
            for (i, kind) in LISTENERS.iter().enumerate() {
                let port = FIRST_PORT + i as u16;
                fds.push(listen_with(false, port, kind.v4).expect(kind.name));
                fds.push(listen_with(true, port, kind.v6).expect(kind.name));
            }
            fds
        })
        .unwrap();
    let synguard = Synguard::start(&server, &["--mode", "cookie"]).unwrap();
    let oracle = Oracle {
        wire: Wire::open(&lab),
        iface: server.iface.clone(),
        next_port: AtomicU16::new(41000),
        _synguard: synguard,
    };
    let mut failures = Vec::new();
    let mut cases = 0;
    let mut check_from = |what: String, ipv6: bool, host: u8, port: u16, layout: &Layout| {
        cases += 1;
        if let Err(e) = oracle.compare_from(&what, ipv6, host, port, layout) {
            failures.push(e);
        }
    };
    let families = [(false, "IPv4"), (true, "IPv6")];

    for &(ipv6, family) in &families {
        for layout in LAYOUTS {
            check_from(
                format!("{family} {}", layout.name),
                ipv6,
                2,
                FIRST_PORT,
                layout,
            );
        }
        for (i, kind) in LISTENERS.iter().enumerate().skip(1) {
            let port = FIRST_PORT + i as u16;
            check_from(
                format!("{family} listener {}", kind.name),
                ipv6,
                2,
                port,
                &LINUX_LAYOUT,
            );
            check_from(
                format!("{family} listener {}, Windows client", kind.name),
                ipv6,
                2,
                port,
                &LAYOUTS[1],
            );
        }
    }

    // Host changes after synguard started: each must show in the next SYN-ACKs (the
    // controller polls every 100 ms).
    let settle = || thread::sleep(Duration::from_millis(400));
    let route_v4 = "198.18.0.0/24";
    let route_v6 = "fd00:198:18::/64";
    let host_changes: Vec<(&str, Commands, Commands, Layout)> = vec![
        (
            "tcp_rmem max 15 MiB",
            vec![sysctl("net.ipv4.tcp_rmem", "4096 131072 15728640")],
            vec![sysctl(
                "net.ipv4.tcp_rmem",
                &server.sysctl("net.ipv4.tcp_rmem").unwrap(),
            )],
            LINUX_LAYOUT,
        ),
        (
            "tcp_window_scaling=0",
            vec![sysctl("net.ipv4.tcp_window_scaling", "0")],
            vec![sysctl("net.ipv4.tcp_window_scaling", "1")],
            LINUX_LAYOUT,
        ),
        (
            "tcp_sack=0",
            vec![sysctl("net.ipv4.tcp_sack", "0")],
            vec![sysctl("net.ipv4.tcp_sack", "1")],
            LINUX_LAYOUT,
        ),
        (
            "tcp_ecn=0",
            vec![sysctl("net.ipv4.tcp_ecn", "0")],
            vec![sysctl("net.ipv4.tcp_ecn", "2")],
            ECN_LAYOUT,
        ),
        (
            "tcp_ecn=1",
            vec![sysctl("net.ipv4.tcp_ecn", "1")],
            vec![sysctl("net.ipv4.tcp_ecn", "2")],
            ECN_LAYOUT,
        ),
        (
            "ip_default_ttl=77",
            vec![sysctl("net.ipv4.ip_default_ttl", "77")],
            vec![sysctl("net.ipv4.ip_default_ttl", "64")],
            LINUX_LAYOUT,
        ),
        // On every route out of the interface (the lab's connected routes, and the route to
        // the spoofed range): routes with different metrics make their family's SYNs go to
        // the kernel (host_facts.rs), which `routes_that_differ_leave_syns_to_the_kernel`
        // checks.
        (
            "route advmss 1000",
            vec![
                route("-4", route_v4, &server.iface, &["advmss", "1000"]),
                spoofed_route(&lab, &["advmss", "1000"]),
                route("-6", route_v6, &server.iface, &["advmss", "1000"]),
            ],
            vec![
                route("-4", route_v4, &server.iface, &[]),
                spoofed_route(&lab, &[]),
                route("-6", route_v6, &server.iface, &[]),
            ],
            LINUX_LAYOUT,
        ),
        (
            "interface MTU 1400",
            vec![link_mtu(&server.iface, 1400)],
            vec![link_mtu(&server.iface, 1500)],
            LINUX_LAYOUT,
        ),
    ];
    for (name, apply, undo, layout) in host_changes {
        for command in &apply {
            server.exec(&command[0], &args(command)).unwrap();
        }
        settle();
        for &(ipv6, family) in &families {
            check_from(
                format!("{family} after {name}"),
                ipv6,
                2,
                FIRST_PORT,
                &layout,
            );
        }
        for command in &undo {
            server.exec(&command[0], &args(command)).unwrap();
        }
    }
    // Routes that differ between clients: an advmss for one host of the client's network
    // only. The data path looks each client's route up (the longest prefix wins).
    let other_host = |last: &str| {
        for (family, prefix, neighbour) in [
            (
                "-4",
                format!("198.18.0.{last}/32"),
                format!("198.18.0.{last}"),
            ),
            (
                "-6",
                format!("fd00:198:18::{last}/128"),
                format!("fd00:198:18::{last}"),
            ),
        ] {
            let mut add = route(family, &prefix, &server.iface, &["advmss", "900"]);
            add[3] = "add".into();
            server.exec(&add[0], &args(&add)).unwrap();
            let mac = lab.client.mac.map(|b| format!("{b:02x}")).join(":");
            server
                .exec(
                    "ip",
                    &[
                        "neigh",
                        "replace",
                        &neighbour,
                        "lladdr",
                        &mac,
                        "dev",
                        &server.iface,
                    ],
                )
                .unwrap();
        }
    };
    other_host("3");
    settle();
    for &(ipv6, family) in &families {
        check_from(
            format!("{family} from a host with its own route (advmss 900)"),
            ipv6,
            3,
            FIRST_PORT,
            &LINUX_LAYOUT,
        );
        check_from(
            format!("{family} from the client, beside that route"),
            ipv6,
            2,
            FIRST_PORT,
            &LINUX_LAYOUT,
        );
    }

    // net.core.rmem_max is machine-wide: raised above tcp_rmem's maximum it sets the scale.
    {
        let _raised = GlobalSysctl::set("net.core.rmem_max", "67108864");
        settle();
        for &(ipv6, family) in &families {
            check_from(
                format!("{family} after rmem_max 64 MiB"),
                ipv6,
                2,
                FIRST_PORT,
                &LINUX_LAYOUT,
            );
        }
    }
    drop(listeners);
    assert!(
        failures.is_empty(),
        "{} of {cases} SYN-ACKs differ from the kernel's:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{cases} SYN-ACKs equal the kernel's own, field by field");
}

/// Commands run in the server's namespace: program, then arguments.
type Commands = Vec<Vec<String>>;

fn sysctl(key: &str, value: &str) -> Vec<String> {
    vec!["sysctl".into(), "-qw".into(), format!("{key}={value}")]
}

/// Replaces the connected route (IPv6: its metric is 256, and the metric is part of the key).
fn route(family: &str, prefix: &str, iface: &str, extra: &[&str]) -> Vec<String> {
    let mut command: Vec<String> = ["ip", family, "route", "replace", prefix, "dev", iface]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if family == "-6" {
        command.extend(["metric".to_string(), "256".to_string()]);
    }
    command.extend(extra.iter().map(|s| s.to_string()));
    command
}

fn spoofed_route(lab: &Lab, extra: &[&str]) -> Vec<String> {
    let mut command: Vec<String> = [
        "ip",
        "-4",
        "route",
        "replace",
        synguard_lab::SPOOFED_V4,
        "via",
        &lab.client.ipv4.to_string(),
        "dev",
        &lab.server.iface,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    command.extend(extra.iter().map(|s| s.to_string()));
    command
}

fn link_mtu(iface: &str, mtu: u32) -> Vec<String> {
    ["ip", "link", "set", "dev", iface, "mtu", &mtu.to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn args(command: &[String]) -> Vec<&str> {
    command[1..].iter().map(String::as_str).collect()
}
