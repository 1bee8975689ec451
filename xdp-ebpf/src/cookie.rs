//! Answering a SYN to a protected port with a SYN cookie, from XDP: find the listener, get a
//! cookie the kernel will accept, rewrite the SYN into a SYN-ACK in place, send it back.
//!
//! The kernel accepts a cookie ACK only if the listener's "recent overflow" time was stamped
//! less than 120 s before (tcp_synq_no_recent_overflow(), include/net/tcp.h). Only
//! `bpf_tcp_gen_syncookie` stamps it (through tcp_synq_overflow()); the socket-less
//! `bpf_tcp_raw_gen_syncookie_ipv4/6` is cheaper but does not. So each CPU calls the stamping
//! helper for a destination at most every 10 ms and the raw one in between: the stamp never
//! ages past 10 ms while cookies are being sent. A listener that restarts is a new socket that
//! nobody stamped: the first SYN to it is stamped when its address differs from the old one's,
//! and within 10 ms when the kernel gave it the old one's memory (which it does: found by
//! tests/tests/connection_matrix.rs). At 100 stamps a second per CPU and destination the
//! stamping helper costs nothing measurable. When and whom each CPU last stamped for a
//! destination is kept in a small
//! direct-mapped table ([`StampSlot`]): two destinations that share a slot only stamp more
//! often.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{bpf_sock, iphdr, ipv6hdr, tcphdr},
    helpers::generated::{
        bpf_ktime_get_coarse_ns, bpf_loop, bpf_tcp_gen_syncookie, bpf_tcp_raw_gen_syncookie_ipv4,
        bpf_tcp_raw_gen_syncookie_ipv6, bpf_xdp_adjust_tail, bpf_xdp_load_bytes,
    },
    programs::XdpContext,
};
use synguard_common::{
    Action, Config, Reason, STAMP_SLOTS, checksum,
    classify::{Ipv4OptionStep, ipv4_option_at},
    config::cap,
    promise::{cookie_mss, synack_tos},
    tcp::{
        self, Declined, MAX_OPTIONS_LEN, SYNACK_TCP_LEN, SYNACK_TCP_LEN_NO_WSCALE,
        SYNACK_TCP_LEN_SHORT, SynAck, SynAckIp, SynEcn, SynOptions, negotiate,
        parse_linux_syn_options, parse_option_at, write_cookie_probe,
    },
};

use crate::{
    bpf::mem::opaque,
    caps,
    count::Verdict,
    listener::{self, NoPromise},
    local,
    maps::{SYNGUARD_STAMPED, SYNGUARD_STAMPS},
    owners,
    parse::{TcpAt, frame_len, ptr_at, ptr_at_mut},
    scratch::{MAX_IP_OPTIONS_LEN, Scratch},
    sock::{self, Endpoints, Found},
};

/// One slot of the stamp table (`STAMPS_MAP`, `STAMP_SLOTS` per CPU): a destination (address
/// words, then port and family), the listener stamped for it, and when this CPU last stamped
/// it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StampSlot {
    pub dst: [u32; 5],
    /// The low half of the listener's address: a listener opened again on the same port is
    /// another socket, never stamped, and the kernel refuses its cookies (and resets those
    /// clients) until it is. Two listeners whose addresses share their low 32 bits (the same
    /// memory, reused) are stamped within the interval instead.
    pub listener: u32,
    pub at_ns: u64,
}

impl StampSlot {
    /// The destination's words, and its slot.
    #[inline(always)]
    fn key(ends: &Endpoints) -> ([u32; 5], u32) {
        let a = &ends.dst;
        let dst = [
            a.u32_at(0),
            a.u32_at(1),
            a.u32_at(2),
            a.u32_at(3),
            u32::from(ends.dst_port()) | (u32::from(ends.ipv6) << 16),
        ];
        // Multiplicative hashing: the top bits of the product depend on every input bit.
        let mixed = (dst[0] ^ dst[1].rotate_left(7) ^ dst[2].rotate_left(13))
            ^ (dst[3].rotate_left(19) ^ dst[4].rotate_left(25));
        let slot = mixed.wrapping_mul(0x9e37_79b1) >> (32 - STAMP_SLOTS.trailing_zeros());
        (dst, slot)
    }

    /// Whether the slot holds destination `dst` (word by word: an array comparison is a
    /// `memcmp` call on BPF).
    #[inline(always)]
    fn holds(&self, dst: &[u32; 5]) -> bool {
        (self.dst[0] ^ dst[0])
            | (self.dst[1] ^ dst[1])
            | (self.dst[2] ^ dst[2])
            | (self.dst[3] ^ dst[3])
            | (self.dst[4] ^ dst[4])
            == 0
    }
}

const _: () = assert!(STAMP_SLOTS.is_power_of_two() && size_of::<StampSlot>() == 32);

const STAMP_INTERVAL_NS: u64 = 10_000_000;

/// How a SYN was answered: after a lookup, after a lookup and a stamp, without a lookup.
const HOW_RAW: u64 = 0;
const HOW_STAMPED: u64 = 1;
const HOW_NO_LOOKUP: u64 = 2;

/// Next to each stamp slot (`STAMPED_MAP`, same index): the whole address of the listener that
/// was stamped, and the listener epoch when it was looked up. The fast path answers for that
/// listener without looking it up again. Not pinned, unlike the stamp table: a new program
/// learns its listeners afresh.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Stamped {
    pub listener: u64,
    pub epoch: u64,
}

impl Stamped {
    /// Whether the listener learned with `stamp` still listens: no listener opened or closed
    /// anywhere since (`epoch`), and it is the one `stamp` was made for (the pinned stamp
    /// table outlives a program; this twin of it does not).
    #[inline(always)]
    fn still_listening(&self, stamp: &StampSlot, epoch: u64) -> bool {
        self.epoch == epoch && self.listener as u32 == stamp.listener
    }
}

/// Whether a listener is there for `ends`' destination: this CPU found one for it, and no
/// listener opened or closed anywhere since (`epoch`), so it still listens. No clock: an ACK
/// flood brings no SYNs to keep a stamp fresh, and existence needs none.
#[inline(always)]
pub fn listener_known(ends: &Endpoints, epoch: u64) -> bool {
    let (dst, slot) = StampSlot::key(ends);
    let (Some(stamp), Some(known)) = (SYNGUARD_STAMPS.get(slot), SYNGUARD_STAMPED.get(slot)) else {
        return false;
    };
    stamp.holds(&dst) && known.still_listening(stamp, epoch)
}

/// Stamps the listener's overflow time: `bpf_tcp_gen_syncookie` calls tcp_synq_overflow()
/// (tcp_v4_get_syncookie(), net/ipv4/tcp_ipv4.c; tcp_v6_get_syncookie()). Its cookie is not
/// used: the reply's cookie comes from the raw helper, the same function of the 4-tuple, the
/// ISN and the MSS (__cookie_v4_init_sequence()), once the MSS is known. False when the helper
/// declines (tcp_get_syncookie_mss(), net/ipv4/tcp_input.c): tcp_syncookies is 0, or 1 with
/// the SYN queue not full; the accept queue is full; the listener refuses this family.
#[inline(always)]
fn stamp_listener(
    ctx: &XdpContext,
    at: &TcpAt,
    listener: *mut bpf_sock,
    syn: &[u8; 20],
    scratch: &mut Scratch,
) -> bool {
    write_cookie_probe(&mut scratch.probe.0, syn, None, at.ipv6);
    let probe = scratch.probe.0.as_mut_ptr() as *mut tcphdr;
    let (ip, len) = if at.ipv6 {
        match ptr_at::<[u8; 40]>(ctx, at.l3) {
            Some(ip) => (ip as *mut c_void, 40),
            None => return false,
        }
    } else {
        match ptr_at::<[u8; 20]>(ctx, at.l3) {
            Some(ip) => (ip as *mut c_void, 20),
            None => return false,
        }
    };
    // SAFETY: `ip` is checked for `len` bytes, `probe` is 24 bytes of this CPU's scratch slot,
    // and the listener reference is live. The helper only reads through them.
    unsafe { bpf_tcp_gen_syncookie(listener as *mut c_void, ip, len, probe, 24) >= 0 }
}

/// A SYN answered with a cookie: the SYN-ACK's TCP header is built in the scratch slot, and
/// [`send`] turns the frame into the reply.
pub struct Answer {
    at: TcpAt,
    /// Where the reply's TCP header goes: right after a fixed IP header, whatever options or
    /// extension headers the SYN had.
    reply_l4: usize,
    ip: SynAckIp,
    /// The SYN-ACK's TCP header length (one of the three layouts).
    len: usize,
    reason: Reason,
    /// This CPU's scratch slot, which holds the header.
    scratch: *const Scratch,
}

impl Answer {
    /// What the answer counts as once sent.
    #[inline(always)]
    pub fn verdict(&self) -> Verdict {
        Verdict::new(Action::Tx, self.reason)
    }
}

/// Answers a SYN to a protected port, or says why not (`Err`: what happens to it instead).
#[inline(always)]
pub fn answer_syn(
    ctx: &XdpContext,
    at: &TcpAt,
    config: &Config,
    scratch: &mut Scratch,
    monitor: bool,
) -> Result<Answer, Verdict> {
    // The kernel echoes some IPv4 options in its SYN-ACK, which the reply here does not build;
    // with only the others, its SYN-ACK has a plain header, as this one. IPv6 extension
    // headers were walked by `parse`, and the kernel's SYN-ACK carries none of them.
    if at.ip_options && !at.ipv6 && !ipv4_options_plain(ctx, at, scratch) {
        return Err(match monitor {
            true => Verdict::pass(Reason::MonitorWouldDrop),
            false => Verdict::new(Action::Drop, Reason::SynIpOptions),
        });
    }
    let Some(syn) = ptr_at::<[u8; 20]>(ctx, at.l4) else {
        return Err(Verdict::PASS);
    };
    let Some(ip_start) = ptr_at::<[u8; 2]>(ctx, at.l3) else {
        return Err(Verdict::PASS);
    };
    // SAFETY: bounds checked by `ptr_at`; the arrays have alignment 1.
    let (syn, ip_start) = unsafe { (&*syn, &*ip_start) };
    let client_isn = u32::from_be_bytes([syn[4], syn[5], syn[6], syn[7]]);
    // The SYN's TOS / traffic class, for ECN setup and `tcp_reflect_tos`.
    let syn_tos = if at.ipv6 {
        (ip_start[0] << 4) | (ip_start[1] >> 4)
    } else {
        ip_start[1]
    };
    let ecn = SynEcn {
        byte12: syn[12],
        flags: syn[13],
        ip_tos: syn_tos,
    };
    if Endpoints::read_into(ctx, at, &mut scratch.ends).is_none() {
        return Err(Verdict::PASS);
    }
    // The coarse clock (a tick's resolution) is enough for every use here: the listener
    // cache's 10 ms, the 10 ms stamp interval and the SYN-ACK's TSval, whose low 6 bits carry
    // options anyway; and it reads a variable instead of the TSC, which costs ~20 ns a SYN here
    // (ktime_get_coarse_ns(), kernel/time/timekeeping.c). Same clock as the kernel's TCP
    // timestamps: CLOCK_MONOTONIC.
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let (dst, slot) = StampSlot::key(&scratch.ends);
    let (Some(stamp), Some(known)) = (
        SYNGUARD_STAMPS.get_ptr_mut(slot),
        SYNGUARD_STAMPED.get_ptr_mut(slot),
    ) else {
        return Err(Verdict::PASS);
    };
    // SAFETY: this CPU's own slots; XDP runs with preemption disabled.
    let (stamp, known) = unsafe { (&mut *stamp, &mut *known) };
    let fresh = stamp.holds(&dst) && now.wrapping_sub(stamp.at_ns) < STAMP_INTERVAL_NS;
    // The fast path (docs/design.md): this CPU looked this destination's listener up and
    // stamped it within the interval, no listener opened or closed since, and the source
    // cannot own a socket, so the lookup would find that same listener again.
    let owners_state = owners::state();
    let epoch = owners::listener_epoch(owners_state);
    let fast = !monitor
        && fresh
        && known.still_listening(stamp, epoch)
        && !owners::may_own(owners_state, owners::source_key(&scratch.ends))
        && local::unicast_frame(ctx);
    // Through memory, so that the many ways to each answer meet again here.
    let flags = opaque(&mut scratch.how, fast as u64 | (fresh as u64) << 1);
    let (fast, fresh) = (flags & 1 != 0, flags & 2 != 0);
    let how = if fast {
        scratch.listener_addr = known.listener;
        HOW_NO_LOOKUP
    } else {
        let listener = match sock::lookup(ctx, &scratch.ends, &mut scratch.tuple) {
            Found::Nothing => return Err(Verdict::pass(Reason::SynNoListener)),
            Found::Connection { .. } => return Err(Verdict::pass(Reason::SynExistingSocket)),
            Found::Listener(sk) => sk,
        };
        // The verifier forbids arithmetic on socket pointers (`adjust_ptr_min_max_vals()`,
        // kernel/bpf/verifier.c) but lets a program with CAP_PERFMON store one in a map
        // (`allow_ptr_leaks`), and what is loaded back from a map is a plain number.
        let addr = opaque(&mut scratch.listener_addr, listener as u64);
        if !local::addressed_here(ctx, &scratch.ends) {
            sock::release(listener);
            return Err(Verdict::pass(Reason::NotLocal));
        }
        if monitor {
            sock::release(listener);
            return Err(Verdict::pass(Reason::MonitorWouldAnswer));
        }
        let due = !fresh || stamp.listener != addr as u32;
        if due {
            let stamped = stamp_listener(ctx, at, listener, syn, scratch);
            sock::release(listener);
            if !stamped {
                return Err(Verdict::pass(Reason::SynHelperDeclined));
            }
            stamp.dst = dst;
            stamp.listener = addr as u32;
            stamp.at_ns = now;
            known.listener = addr;
            known.epoch = epoch;
        } else {
            sock::release(listener);
        }
        if due { HOW_STAMPED } else { HOW_RAW }
    };
    // Both ways meet here with the listener's address and how the SYN is answered in map
    // memory, so the rest of the path is verified once, not once per way.
    let how = opaque(&mut scratch.how, how);
    // SAFETY: an aligned u64 of this CPU's scratch slot; volatile, so it is read from memory.
    let listener_addr = unsafe { core::ptr::read_volatile(&scratch.listener_addr) };
    // Over the SYN-ACK cap the SYN is dropped, not passed: the kernel would answer it instead,
    // and the point of the cap is to bound the replies sent to spoofed sources.
    if !caps::admit(cap::SYNACK, config.synack_cap_pps) {
        return Err(Verdict::new(Action::Drop, Reason::SynAckCapped));
    }
    // What the kernel would promise for this listener; where that cannot be known, the kernel
    // answers itself.
    let (promise, host) =
        match listener::promise_for(listener_addr, &scratch.ends.src, at.ipv6, now) {
            Ok(found) => found,
            Err(why) => {
                return Err(Verdict::pass(match why {
                    NoPromise::Host => Reason::SynHostUnknown,
                    NoPromise::Listener => Reason::SynListenerUnknown,
                }));
            }
        };
    // Options only now: a SYN the kernel gets anyway does not pay for them (about 80 ns, in
    // `cargo xtask bench prog`).
    let offered = read_syn_options(ctx, at, scratch);
    let options = match negotiate(
        &offered,
        ecn,
        config,
        host,
        promise,
        (now / 1_000_000) as u32,
    ) {
        Ok(options) => options,
        Err(why) => {
            return Err(Verdict::pass(match why {
                Declined::TimestampOffset => Reason::SynTimestampOffset,
                Declined::AccurateEcn => Reason::SynAccurateEcn,
            }));
        }
    };
    let mss = cookie_mss(offered.mss, promise);
    write_cookie_probe(&mut scratch.probe.0, syn, mss, at.ipv6);
    let ends = &scratch.ends;
    let probe_ptr = scratch.probe.0.as_mut_ptr() as *mut tcphdr;
    // The helpers read the IP header in the packet (for its addresses and version), with a
    // constant length the verifier checks.
    let value = if ends.ipv6 {
        let Some(ip) = ptr_at::<[u8; 40]>(ctx, at.l3) else {
            return Err(Verdict::PASS);
        };
        // SAFETY: `ip` is checked for 40 bytes, `probe` is 24 bytes of this CPU's scratch
        // slot. The helper only reads through them.
        unsafe { bpf_tcp_raw_gen_syncookie_ipv6(ip as *mut ipv6hdr, probe_ptr, 24) }
    } else {
        let Some(ip) = ptr_at::<[u8; 20]>(ctx, at.l3) else {
            return Err(Verdict::PASS);
        };
        // SAFETY: as above, with 20 bytes of IPv4 header.
        unsafe { bpf_tcp_raw_gen_syncookie_ipv4(ip as *mut iphdr, probe_ptr, 24) }
    };
    // Only for a malformed header, which `parse` rules out.
    if value < 0 {
        return Err(Verdict::pass(Reason::SynHelperDeclined));
    }

    // The kernel rounds its window to the MSS less the timestamp option when it sends one.
    let window = match options.timestamp {
        Some(_) => promise.window_ts,
        None => promise.window_plain,
    };
    let synack = SynAck {
        src_port: ends.dst_port(),
        dst_port: ends.src_port(),
        seq: value as u32,
        ack: client_isn.wrapping_add(1),
        window,
        options,
    };
    let ip = SynAckIp {
        tos: synack_tos(promise, host, syn_tos),
        ttl: promise.ttl,
        dont_fragment: promise.dont_fragment != 0,
        // Without DF the kernel picks a random ID (ip_build_and_send_pkt()); the cookie's low
        // bits are as good and cost nothing.
        id: value as u16,
    };
    let len = options.tcp_len();
    let pseudo = if scratch.ends.ipv6 {
        checksum::pseudo_ipv6(&scratch.ends.dst.0, &scratch.ends.src.0, len as u16)
    } else {
        checksum::pseudo_ipv4(&scratch.ends.dst_v4(), &scratch.ends.src_v4(), len as u16)
    };
    tcp::write_synack(&synack, pseudo, &mut scratch.synack.0);
    let reason = match how {
        HOW_STAMPED => Reason::CookieStamped,
        HOW_NO_LOOKUP => Reason::CookieNoLookup,
        _ => Reason::CookieRaw,
    };
    Ok(Answer {
        at: *at,
        reply_l4: at.l3 + if at.ipv6 { 40 } else { 20 },
        ip,
        len,
        reason,
        scratch: scratch as *const Scratch,
    })
}

/// Turns the answered SYN into its SYN-ACK, in place: resized to exactly what the reply needs
/// (on veth a frame has no tailroom to spare, and a failed resize leaves the SYN intact for the
/// kernel, docs/design.md), then written.
#[inline(always)]
pub fn send(ctx: &XdpContext, answer: &Answer) -> Verdict {
    let at = &answer.at;
    let delta = (answer.reply_l4 + answer.len) as i32 - frame_len(ctx) as i32;
    // SAFETY: the context is the program's own.
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return Verdict::pass(Reason::SynResizeFailed);
    }
    // SAFETY: this CPU's scratch slot, which `answer_syn` filled during this run.
    let scratch = unsafe { &*answer.scratch };
    // From here the frame is resized: it must be sent or dropped, never passed half-written.
    if write_reply(ctx, at.l3, answer.reply_l4, scratch, answer.ip, answer.len).is_none() {
        return Verdict::new(Action::Aborted, answer.reason);
    }
    answer.verdict()
}

/// Reads the SYN's options: one `bpf_xdp_load_bytes` copies them into scratch memory, then
/// `bpf_loop` runs `parse_step` once per option, with the cursor and the result in that
/// memory too.
///
/// Why this shape: the verifier tracks every value in registers and on the stack exactly, so a
/// plain 40-step loop made it walk each path through every step, for every header layout that
/// reaches here, past its one-million-instruction budget. A value read back from a map is
/// unknown to it, so the callback's paths all meet again after one step, and it checks the
/// callback body about twice. The kernel's own xdp_synproxy selftest parses options with
/// bpf_loop for the same reason.
#[inline(always)]
fn read_syn_options(ctx: &XdpContext, at: &TcpAt, scratch: &mut Scratch) -> SynOptions {
    // Options are 0 to 40 bytes (data offset 5 to 15). The mask restates that for the
    // verifier, which otherwise can lose the bound of a spilled value and reject the helper
    // call's size as possibly negative.
    let len = ((at.tcp_len - 20) & 0x3f) as u32;
    scratch.options_len = u64::from(len);
    scratch.options_at = 0;
    scratch.parsed = SynOptions::default();
    // The length is 4 to 40 here (a multiple of 4); zero means no options to copy.
    if len > 0 && len <= MAX_OPTIONS_LEN as u32 {
        // SAFETY: the buffer holds MAX_OPTIONS_LEN bytes and `len` is at most that; on error
        // (a frame shorter than its header says, which `parse` already rules out) the buffer
        // keeps its zeroes, which parse as end-of-options.
        unsafe {
            let _ = bpf_xdp_load_bytes(
                ctx.ctx,
                (at.l4 + 20) as u32,
                scratch.options.as_mut_ptr() as *mut c_void,
                len,
            );
        }
    }
    if len == 0 {
        return SynOptions::default();
    }
    if let Some(parsed) = parse_linux_syn_options(&scratch.options, len as usize) {
        return parsed;
    }
    step_over_scratch(scratch, MAX_OPTIONS_LEN as u32, parse_step);
    scratch.parsed
}

/// Whether the SYN's IPv4 options leave the kernel's SYN-ACK with a plain header: none that
/// it echoes (`__ip_options_echo()`, net/ipv4/ip_options.c), none it rejects. The options are
/// copied into scratch memory and walked one per `bpf_loop` step, as the TCP options are.
#[inline(always)]
fn ipv4_options_plain(ctx: &XdpContext, at: &TcpAt, scratch: &mut Scratch) -> bool {
    // 4 to 40 bytes; the mask restates that bound for the verifier.
    let len = (at.l4.wrapping_sub(at.l3 + 20) & 0x3f) as u32;
    if len == 0 || len > MAX_IP_OPTIONS_LEN as u32 {
        return false;
    }
    // SAFETY: the buffer holds MAX_IP_OPTIONS_LEN bytes and `len` is at most that.
    let copied = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            (at.l3 + 20) as u32,
            scratch.ip_options.as_mut_ptr() as *mut c_void,
            len,
        )
    };
    if copied != 0 {
        return false;
    }
    scratch.ip_options_len = u64::from(len);
    scratch.ip_options_at = 0;
    scratch.ip_options_plain = 0;
    // One step per option, and one more to reach the end: 40 NOPs take 41.
    step_over_scratch(scratch, MAX_IP_OPTIONS_LEN as u32 + 1, ip_option_step);
    scratch.ip_options_plain == 1
}

/// One IPv4 option per call; sets `ip_options_plain` at the end of a plain list. Returns 1 to
/// stop.
#[inline(never)]
extern "C" fn ip_option_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `StepCtx` passed to bpf_loop, pointing at this CPU's scratch slot.
    let scratch = unsafe { &mut *(*(ctx as *mut StepCtx)).scratch };
    let (len, at) = (
        scratch.ip_options_len as usize,
        scratch.ip_options_at as usize,
    );
    match ipv4_option_at(&scratch.ip_options, len, at) {
        Ipv4OptionStep::Next(next) => {
            scratch.ip_options_at = next as u64;
            0
        }
        Ipv4OptionStep::End => {
            scratch.ip_options_plain = 1;
            1
        }
        Ipv4OptionStep::Echoed | Ipv4OptionStep::Malformed => 1,
    }
}

/// Runs `step` up to `steps` times with bpf_loop, each call finding this CPU's scratch slot
/// (its cursor and its result) through a `StepCtx`; `step` returns 1 to stop.
#[inline(always)]
fn step_over_scratch(
    scratch: &mut Scratch,
    steps: u32,
    step: extern "C" fn(u64, *mut c_void) -> i64,
) {
    let mut step_ctx = StepCtx {
        scratch: scratch as *mut Scratch,
    };
    // SAFETY: `step` is a BPF subprogram with the callback signature bpf_loop expects, and
    // `step_ctx` lives on this stack frame for the whole call.
    unsafe {
        bpf_loop(
            steps,
            step as *mut c_void,
            &mut step_ctx as *mut StepCtx as *mut c_void,
            0,
        );
    }
}

/// What `bpf_loop` hands `parse_step`: bpf_loop's context must live on the stack, so it only
/// points at the scratch slot.
#[repr(C)]
struct StepCtx {
    scratch: *mut Scratch,
}

/// One option per call; returns 1 to stop the loop (bpf_loop's contract).
#[inline(never)]
extern "C" fn parse_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `StepCtx` passed to bpf_loop, pointing at this CPU's scratch slot.
    let scratch = unsafe { &mut *(*(ctx as *mut StepCtx)).scratch };
    let (len, at) = (scratch.options_len as usize, scratch.options_at as usize);
    match parse_option_at(&scratch.options, len, at, &mut scratch.parsed) {
        Some(next) => {
            scratch.options_at = next as u64;
            0
        }
        None => 1,
    }
}

/// Turns the (resized) frame into the SYN-ACK: MACs swapped, VLAN tags kept, a fresh IP
/// header with the addresses swapped, and the TCP header `tcp::write_synack` built in
/// `scratch.synack`, copied in a word at a time, a constant size per layout.
#[inline(always)]
fn write_reply(
    ctx: &XdpContext,
    l3: usize,
    l4: usize,
    scratch: &Scratch,
    ip_fields: SynAckIp,
    len: usize,
) -> Option<()> {
    let ends = &scratch.ends;
    let eth = ptr_at_mut::<[u8; 12]>(ctx, 0)?;
    // SAFETY: every pointer below was checked against the resized frame by `ptr_at_mut`, and
    // the arrays they point at have alignment 1.
    unsafe {
        let eth = &mut *eth;
        for i in 0..6 {
            eth.swap(i, i + 6);
        }
        if ends.ipv6 {
            let ip = &mut *ptr_at_mut::<[u8; 40]>(ctx, l3)?;
            tcp::write_ipv6_header(ip, &ends.dst.0, &ends.src.0, ip_fields, len as u16);
        } else {
            let ip = &mut *ptr_at_mut::<[u8; 20]>(ctx, l3)?;
            tcp::write_ipv4_header(ip, ends.dst_v4(), ends.src_v4(), ip_fields, len as u16);
        }
        if len == SYNACK_TCP_LEN {
            let tcp = ptr_at_mut::<[u8; SYNACK_TCP_LEN]>(ctx, l4)?;
            scratch
                .synack
                .copy_words_to::<{ SYNACK_TCP_LEN / 8 }>(tcp as *mut u8);
        } else if len == SYNACK_TCP_LEN_NO_WSCALE {
            let tcp = ptr_at_mut::<[u8; SYNACK_TCP_LEN_NO_WSCALE]>(ctx, l4)?;
            let synack = &scratch.synack;
            synack.copy_words_to::<{ SYNACK_TCP_LEN_NO_WSCALE / 8 }>(tcp as *mut u8);
            synack.copy_u32_at_to::<{ SYNACK_TCP_LEN_NO_WSCALE / 4 - 1 }>(tcp as *mut u8);
        } else {
            let tcp = ptr_at_mut::<[u8; SYNACK_TCP_LEN_SHORT]>(ctx, l4)?;
            scratch
                .synack
                .copy_words_to::<{ SYNACK_TCP_LEN_SHORT / 8 }>(tcp as *mut u8);
        }
    }
    Some(())
}
