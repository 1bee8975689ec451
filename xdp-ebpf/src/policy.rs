//! Decides what happens to a classified packet: whether its source is on the allow or deny
//! list, which mode is in force, whether its port is protected, whether its source is over its
//! SYN rate limit, and which stage handles it (cookie responder for SYNs, cookie check for
//! ACKs).

use aya_ebpf::programs::XdpContext;
use synguard_common::{
    Action, Class, Config, Mode, Reason,
    classify::cookie_checked,
    config::{cap, flags, list},
};

use crate::{
    ack, auto,
    bpf::mem::opaque,
    caps,
    cookie::{self, Answer},
    count::Verdict,
    limit, lists,
    maps::{SYNGUARD_CONFIG, SYNGUARD_PORTS, SYNGUARD_SCRATCH},
    parse::{MAX_L3, MAX_L4, MAX_TCP_LEN, Packet, TcpAt, ptr_at},
};

/// What the policy decided: a verdict, or a SYN answered with a cookie whose reply is still to
/// be written into the frame (`cookie::send`).
pub enum Decision {
    Verdict(Verdict),
    Answer(Answer),
}

impl From<Verdict> for Decision {
    #[inline(always)]
    fn from(verdict: Verdict) -> Decision {
        Decision::Verdict(verdict)
    }
}

#[inline(always)]
pub fn decide(ctx: &XdpContext, packet: &Packet) -> Decision {
    let Some(config) = SYNGUARD_CONFIG.get(0) else {
        return Verdict::PASS.into();
    };
    let verdict = match decide_for(ctx, packet, config) {
        Decision::Verdict(verdict) => verdict,
        answer => return answer,
    };
    // The cap on SYNs handed to the kernel, whatever the reason they would be; not for
    // allowed sources, and not in monitor mode, which changes nothing.
    let capped = packet.class == Class::Syn
        && verdict.action == Action::Pass
        && verdict.reason != Some(Reason::ListAllowed)
        && !matches!(config.mode(), Mode::Monitor | Mode::Off)
        && !caps::admit(cap::SYN_PASS, config.syn_pass_cap_pps);
    if capped {
        return Verdict::new(Action::Drop, Reason::SynPassCapped).into();
    }
    verdict.into()
}

#[inline(always)]
fn decide_for(ctx: &XdpContext, packet: &Packet, config: &Config) -> Decision {
    let mode = config.mode();
    if mode == Mode::Off {
        return Verdict::PASS.into();
    }
    // The lists come first and apply to every IP packet, looked up only when they have entries.
    if let (true, Some(ip)) = (config.has(flags::LISTS), packet.ip) {
        match lists::lookup(ctx, &ip) {
            Some(list::ALLOW) => return Verdict::pass(Reason::ListAllowed).into(),
            Some(list::DENY) if mode == Mode::Monitor => {
                return Verdict::pass(Reason::MonitorWouldDrop).into();
            }
            Some(list::DENY) => return Verdict::new(Action::Drop, Reason::ListDenied).into(),
            _ => {}
        }
    }
    // IPv6 whose extension headers cannot be walked to the payload: its port cannot be read,
    // so it is treated as if it were to a protected one.
    if packet.class == Class::Ipv6Ext {
        return unjudgeable(mode, config, Reason::Ipv6Unjudged).into();
    }
    // SYNs, and every segment the kernel would check for a cookie (ACK, FIN+ACK): those are
    // judged, the rest passed.
    let (Some(at), Class::Syn | Class::Ack | Class::Fin) = (packet.tcp, packet.class) else {
        return Verdict::PASS.into();
    };
    let Some(header) = ptr_at::<[u8; 14]>(ctx, at.l4) else {
        return Verdict::PASS.into();
    };
    // SAFETY: bounds checked by `ptr_at`.
    let (dst_port, flags) = unsafe {
        (
            u16::from_be_bytes([(*header)[2], (*header)[3]]),
            (*header)[13],
        )
    };
    if packet.class == Class::Fin && !cookie_checked(flags) {
        return Verdict::PASS.into();
    }
    let all_ports = config.has(flags::ALL_PORTS);
    if !all_ports && !port_listed(dst_port) {
        return match packet.class {
            Class::Syn => Verdict::pass(Reason::SynUnprotectedPort),
            _ => Verdict::PASS,
        }
        .into();
    }

    // `auto` counts every SYN to a protected port, those over a limit too: they are the flood.
    let answering = match mode {
        Mode::Cookie | Mode::Monitor => true,
        Mode::Auto => match (packet.class, packet.ip) {
            (Class::Syn, Some(ip)) => auto::observe_syn(ctx, &ip, dst_port, config),
            _ => auto::under_attack(config),
        },
        Mode::Off => false,
    };
    let monitor = mode == Mode::Monitor;
    // A handshake segment in a fragment: no SYN or ACK of a real client is fragmented, and
    // the kernel would reassemble it before judging it, at its own cost.
    if at.fragment {
        return match (answering, monitor) {
            (false, _) => Verdict::PASS,
            (true, true) => Verdict::pass(Reason::MonitorWouldDrop),
            (true, false) => Verdict::new(Action::Drop, Reason::TcpFragment),
        }
        .into();
    }
    if let (Class::Syn, Some(ip)) = (packet.class, packet.ip)
        && !limit::admit(ctx, &ip, config)
    {
        return match monitor {
            true => Verdict::pass(Reason::MonitorWouldDrop),
            false => Verdict::new(Action::Drop, Reason::SynSourceLimited),
        }
        .into();
    }
    if !answering {
        return match packet.class {
            Class::Syn => Verdict::pass(Reason::SynBelowThreshold),
            _ => Verdict::PASS,
        }
        .into();
    }
    let Some(scratch) = SYNGUARD_SCRATCH.get_ptr_mut(0) else {
        return Verdict::PASS.into();
    };
    // SAFETY: this CPU's own slot; XDP runs with preemption disabled.
    let scratch = unsafe { &mut *scratch };
    // From here on, the offsets are numbers the verifier does not know exactly, bounded by
    // the masks: the judging stages are verified once for every header layout, not once per
    // layout, which kept the program within the verifier's budget.
    // One round trip for the three, packed in a word: each costs a store and a load.
    let packed = (at.l3 as u64) | (at.l4 as u64) << 16 | (at.tcp_len as u64) << 32;
    let packed = opaque(&mut scratch.at_offsets, packed);
    let at = TcpAt {
        l3: (packed & MAX_L3) as usize,
        l4: ((packed >> 16) & MAX_L4) as usize,
        tcp_len: ((packed >> 32) & MAX_TCP_LEN) as usize,
        ..at
    };
    match packet.class {
        Class::Syn => match cookie::answer_syn(ctx, &at, config, scratch, monitor) {
            Ok(answer) => Decision::Answer(answer),
            Err(verdict) => verdict.into(),
        },
        _ => ack::check_ack(ctx, &at, scratch, !all_ports, monitor).into(),
    }
}

/// What happens to a packet synguard cannot judge: dropped while cookies are in force
/// (`cookie` mode, or `auto` during an attack), counted in `monitor`, passed otherwise.
#[inline(always)]
fn unjudgeable(mode: Mode, config: &Config, reason: Reason) -> Verdict {
    match mode {
        Mode::Monitor => Verdict::pass(Reason::MonitorWouldDrop),
        Mode::Cookie => Verdict::new(Action::Drop, reason),
        Mode::Auto if auto::under_attack(config) => Verdict::new(Action::Drop, reason),
        Mode::Auto | Mode::Off => Verdict::PASS,
    }
}

#[inline(always)]
fn port_listed(port: u16) -> bool {
    match SYNGUARD_PORTS.get(u32::from(port >> 6)) {
        Some(word) => word & (1u64 << (port & 63)) != 0,
        None => false,
    }
}
