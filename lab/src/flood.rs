//! SYN floods from the client namespace, by a generator of our own: hping3 manages about
//! 23 k frames a second here when paced (`--flood` goes far faster, about 380 k/s, but from
//! one source or random ones, never a chosen range, and unpaced), and trafgen gives up with EAGAIN as soon as the peer's XDP ring
//! pushes back (its socket buffer is capped by net.core.wmem_max, which a child namespace
//! cannot raise). This one sends pre-built frames with sendmmsg(2) on an AF_PACKET socket
//! whose buffer is raised with SO_SNDBUFFORCE, and waits briefly when the ring is full.
//!
//! Sources are spread over 32,768 addresses inside 198.18.128.0/17 only; the server routes that
//! range back to the client namespace, whose XDP program drops the replies (`SPOOFED_V4`,
//! `lab_client`). Every flood is bounded in frames and in time.

use std::{
    io,
    mem::size_of,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use etherparse::{
    IpHeaders, IpNumber, Ipv4Header, Ipv6Extensions, Ipv6Header, Ipv6RawExtHeader, PacketBuilder,
    TcpOptionElement,
};

use crate::{Lab, Netns, netns::FLOOD_V6};

/// Distinct spoofed sources: every address of 198.18.128.0/17.
pub const FLOOD_SOURCES: usize = 32_768;
const BATCH: usize = 64;

/// What a flood did.
#[derive(Debug, Clone, Copy)]
pub struct FloodReport {
    pub sent: u64,
    pub elapsed: Duration,
    /// CPU time of the generator's thread (which, on veth, also runs much of the receive
    /// path).
    pub cpu: Duration,
}

impl FloodReport {
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64()
    }
}

/// What the flood's frames look like: SYNs with no TCP options (as hping3 and most flood
/// tools send) or Linux's, SYNs behind a header an attacker may add to get past a filter, or
/// forged ACKs (a random acknowledgment number, no socket) behind such a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynShape {
    Bare,
    LinuxOptions,
    /// Linux's SYN behind four NOPs of IPv4 options.
    BehindIpv4Options,
    /// Linux's SYN behind an IPv6 Destination Options header (PadN). IPv6 has no spoofed
    /// range in the lab: these come from the client's flood address (`FLOOD_V6`), from many
    /// ports.
    BehindIpv6DestOptions,
    /// Forged ACKs, plain.
    ForgedAck,
    /// Forged ACKs behind four NOPs of IPv4 options.
    ForgedAckBehindIpv4Options,
    /// Forged ACKs behind an IPv6 Destination Options header, from `FLOOD_V6`.
    ForgedAckBehindIpv6DestOptions,
}

impl SynShape {
    fn ipv6(self) -> bool {
        matches!(
            self,
            SynShape::BehindIpv6DestOptions | SynShape::ForgedAckBehindIpv6DestOptions
        )
    }

    fn ack(self) -> bool {
        matches!(
            self,
            SynShape::ForgedAck
                | SynShape::ForgedAckBehindIpv4Options
                | SynShape::ForgedAckBehindIpv6DestOptions
        )
    }
}

/// Four NOPs: IP options the kernel neither echoes nor rejects.
const IPV4_NOPS: [u8; 4] = [1, 1, 1, 1];
/// A Destination Options header's bytes after its next-header field: length 0, PadN of 4.
const DEST_OPTIONS: [u8; 7] = [0, 1, 4, 0, 0, 0, 0];

/// Sends `count` SYNs to the server's `port` at `rate` per second (`None`: as fast as one CPU
/// and the veth allow), for at most `limit`, from every address of 198.18.128.0/17 in turn.
pub fn syn_flood(
    lab: &Lab,
    port: u16,
    count: u64,
    rate: Option<u64>,
    shape: SynShape,
    limit: Duration,
) -> Result<FloodReport> {
    let sources: Vec<[u8; 4]> = (0..FLOOD_SOURCES)
        .map(|i| [198, 18, 128 + (i >> 8) as u8, i as u8])
        .collect();
    syn_flood_from(lab, &sources, port, count, rate, shape, limit)
}

/// Like [`syn_flood`], from the given `sources` in turn (each from many ports). They must lie
/// inside 198.18.128.0/17, where the lab drops the replies.
pub fn syn_flood_from(
    lab: &Lab,
    sources: &[[u8; 4]],
    port: u16,
    count: u64,
    rate: Option<u64>,
    shape: SynShape,
    limit: Duration,
) -> Result<FloodReport> {
    syn_flood_over(
        (&lab.server, &lab.client),
        sources,
        port,
        count,
        rate,
        shape,
        limit,
    )
}

/// Like [`syn_flood_from`], over a given link: `(server end, client end)`, e.g. one made by
/// `Lab::add_link`. The server must route 198.18.128.0/17 away, or drop it, as the lab's does.
pub fn syn_flood_over(
    (server, client): (&Netns, &Netns),
    sources: &[[u8; 4]],
    port: u16,
    count: u64,
    rate: Option<u64>,
    shape: SynShape,
    limit: Duration,
) -> Result<FloodReport> {
    if sources.is_empty() || sources.iter().any(|s| s[0..2] != [198, 18] || s[2] < 128) {
        bail!("flood sources must lie inside 198.18.128.0/17: {sources:?}");
    }
    let frames = build_frames((server, client), sources, port, shape)?;
    let iface = client.iface.clone();
    client.enter(move || send(&iface, &frames, count, rate, limit))?
}

fn build_frames(
    (server, client): (&Netns, &Netns),
    sources: &[[u8; 4]],
    port: u16,
    shape: SynShape,
) -> Result<Vec<Vec<u8>>> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..FLOOD_SOURCES)
        .map(|i| {
            let source = sources[i % sources.len()];
            let random = next();
            let (sport, seq) = ((random >> 16) as u16 | 1024, (random >> 32) as u32);
            let eth = PacketBuilder::ethernet2(client.mac, server.mac);
            let mut tcp = etherparse::TcpHeader::new(sport, port, seq, 64240);
            if shape.ack() {
                tcp.ack = true;
                tcp.acknowledgment_number = random as u32;
            } else {
                tcp.syn = true;
            }
            if !matches!(shape, SynShape::Bare) && !shape.ack() {
                tcp.set_options(&[
                    TcpOptionElement::MaximumSegmentSize(1460),
                    TcpOptionElement::SelectiveAcknowledgementPermitted,
                    TcpOptionElement::Timestamp(random as u32, 0),
                    TcpOptionElement::Noop,
                    TcpOptionElement::WindowScale(7),
                ])
                .context("SYN options")?;
            }
            let mut frame = Vec::new();
            if shape.ipv6() {
                let ip = Ipv6Header {
                    source: FLOOD_V6.parse::<std::net::Ipv6Addr>()?.octets(),
                    destination: server.ipv6.octets(),
                    hop_limit: 64,
                    ..Default::default()
                };
                let extensions = Ipv6Extensions {
                    destination_options: Some(
                        Ipv6RawExtHeader::new_raw(IpNumber::TCP, &DEST_OPTIONS[1..])
                            .context("Destination Options")?,
                    ),
                    ..Default::default()
                };
                eth.ip(IpHeaders::Ipv6(ip, extensions))
                    .tcp_header(tcp)
                    .write(&mut frame, &[])?;
            } else {
                let mut ip = Ipv4Header::new(0, 64, IpNumber::TCP, source, server.ipv4.octets())
                    .context("IPv4 header")?;
                if !matches!(
                    shape,
                    SynShape::Bare | SynShape::LinuxOptions | SynShape::ForgedAck
                ) {
                    ip.options = IPV4_NOPS[..].try_into().context("IPv4 options")?;
                }
                eth.ip(IpHeaders::Ipv4(ip, Default::default()))
                    .tcp_header(tcp)
                    .write(&mut frame, &[])?;
            }
            Ok(frame)
        })
        .collect()
}

fn send(
    iface: &str,
    frames: &[Vec<u8>],
    count: u64,
    rate: Option<u64>,
    limit: Duration,
) -> Result<FloodReport> {
    let ifindex = nix::net::if_::if_nametoindex(iface)?;
    // SAFETY: plain socket calls on a descriptor this function owns and closes.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!("AF_PACKET socket: {}", io::Error::last_os_error());
    }
    let _close = CloseOnDrop(fd);
    let buffer: libc::c_int = 64 << 20;
    // SAFETY: setsockopt with a c_int value of the size passed.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            &buffer as *const _ as *const libc::c_void,
            size_of::<libc::c_int>() as u32,
        );
    }
    // SAFETY: a zeroed sockaddr_ll with family and interface set is a valid destination.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;

    let mut iovecs: Vec<libc::iovec> = frames
        .iter()
        .map(|f| libc::iovec {
            iov_base: f.as_ptr() as *mut libc::c_void,
            iov_len: f.len(),
        })
        .collect();
    let cpu_before = thread_cpu();
    let start = Instant::now();
    let mut sent = 0u64;
    let mut at = 0usize;
    while sent < count && start.elapsed() < limit {
        // Paced: never ahead of `rate`, in batches of about a millisecond's frames (64 at
        // most), so a slow flood arrives as smoothly as a fast one.
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            let elapsed = start.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
        let batch = rate.map_or(BATCH, |r| (r as usize / 1000).clamp(1, BATCH));
        let n = batch.min((count - sent) as usize).min(frames.len() - at);
        // SAFETY: zeroed mmsghdrs, each pointing at one iovec and at `addr`, all of which
        // outlive the call.
        let mut msgs: Vec<libc::mmsghdr> = (0..n)
            .map(|i| {
                let mut msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
                msg.msg_hdr.msg_name = &mut addr as *mut _ as *mut libc::c_void;
                msg.msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
                msg.msg_hdr.msg_iov = &mut iovecs[at + i];
                msg.msg_hdr.msg_iovlen = 1;
                msg
            })
            .collect();
        // SAFETY: as above.
        let rc = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as u32, 0) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                // The peer's ring is full: wait for it to drain.
                Some(libc::ENOBUFS | libc::EAGAIN) => {
                    std::thread::sleep(Duration::from_micros(50));
                    continue;
                }
                _ => bail!("sendmmsg on {iface}: {err}"),
            }
        }
        sent += rc as u64;
        at = (at + rc as usize) % frames.len();
    }
    let elapsed = start.elapsed();
    Ok(FloodReport {
        sent,
        elapsed,
        cpu: thread_cpu().saturating_sub(cpu_before),
    })
}

/// CPU time (user and system) of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out pointer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

struct CloseOnDrop(libc::c_int);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        // SAFETY: the descriptor is owned here.
        unsafe { libc::close(self.0) };
    }
}
