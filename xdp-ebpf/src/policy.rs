//! Decides what happens to a classified packet: whether its source is on the allow or deny
//! list, which mode is in force, whether its port is protected, whether its source is over its
//! SYN rate limit, and which stage handles it (cookie responder for SYNs, cookie check for
//! ACKs).

use aya_ebpf::{
    maps::{Array, LpmTrie, PerCpuArray},
    programs::XdpContext,
};
use synguard_common::{
    Action, Class, Config, Mode, Reason,
    classify::cookie_checked,
    config::{CapState, cap, flags, list},
};

use crate::{
    ack,
    auto::{self, AutoMaps},
    caps,
    cookie::{self, Scratch, SynMaps},
    count::Verdict,
    limit::{self, LimitMaps},
    lists,
    parse::{Packet, ptr_at},
};

/// The maps the decision reads; defined with the entry point.
pub struct Maps {
    pub config: &'static Array<Config>,
    pub ports: &'static Array<u64>,
    pub auto: AutoMaps,
    pub syn: SynMaps,
    pub scratch: &'static PerCpuArray<Scratch>,
    pub list_v4: &'static LpmTrie<[u8; 4], u32>,
    pub list_v6: &'static LpmTrie<[u8; 16], u32>,
    pub caps: &'static PerCpuArray<CapState>,
    pub limit: LimitMaps,
}

/// `rewrite`: turn answered SYNs into SYN-ACKs (always, but for the benchmark's copy; see
/// `cookie::answer_syn`).
#[inline(always)]
pub fn decide(ctx: &XdpContext, packet: &Packet, maps: &Maps, rewrite: bool) -> Verdict {
    let Some(config) = maps.config.get(0) else {
        return Verdict::PASS;
    };
    let verdict = decide_for(ctx, packet, maps, config, rewrite);
    // The cap on SYNs handed to the kernel, whatever the reason they would be; not for
    // allowed sources, and not in monitor mode, which changes nothing.
    let capped = packet.class == Class::Syn
        && verdict.action == Action::Pass
        && verdict.reason != Some(Reason::ListAllowed)
        && !matches!(config.mode(), Mode::Monitor | Mode::Off)
        && !caps::admit(maps.caps, cap::SYN_PASS, config.syn_pass_cap_pps);
    if capped {
        return Verdict::new(Action::Drop, Reason::SynPassCapped);
    }
    verdict
}

#[inline(always)]
fn decide_for(
    ctx: &XdpContext,
    packet: &Packet,
    maps: &Maps,
    config: &Config,
    rewrite: bool,
) -> Verdict {
    let mode = config.mode();
    if mode == Mode::Off {
        return Verdict::PASS;
    }
    // The lists come first and apply to every IP packet, looked up only when they have entries.
    if let (true, Some(ip)) = (config.has(flags::LISTS), packet.ip) {
        match lists::lookup(ctx, &ip, maps.list_v4, maps.list_v6) {
            Some(list::ALLOW) => return Verdict::pass(Reason::ListAllowed),
            Some(list::DENY) if mode == Mode::Monitor => {
                return Verdict::pass(Reason::MonitorWouldDrop);
            }
            Some(list::DENY) => return Verdict::new(Action::Drop, Reason::ListDenied),
            _ => {}
        }
    }
    // SYNs, and every segment the kernel would check for a cookie (ACK, FIN+ACK): those are
    // judged, the rest passed.
    let (Some(at), Class::Syn | Class::Ack | Class::Fin) = (packet.tcp, packet.class) else {
        return Verdict::PASS;
    };
    let Some(header) = ptr_at::<[u8; 14]>(ctx, at.l4) else {
        return Verdict::PASS;
    };
    // SAFETY: bounds checked by `ptr_at`.
    let (dst_port, flags) = unsafe {
        (
            u16::from_be_bytes([(*header)[2], (*header)[3]]),
            (*header)[13],
        )
    };
    if packet.class == Class::Fin && !cookie_checked(flags) {
        return Verdict::PASS;
    }
    let all_ports = config.has(flags::ALL_PORTS);
    if !all_ports && !port_listed(maps.ports, dst_port) {
        return match packet.class {
            Class::Syn => Verdict::pass(Reason::SynUnprotectedPort),
            _ => Verdict::PASS,
        };
    }

    // `auto` counts every SYN to a protected port, those over a limit too: they are the flood.
    let answering = match mode {
        Mode::Cookie | Mode::Monitor => true,
        Mode::Auto => match (packet.class, packet.ip) {
            (Class::Syn, Some(ip)) => auto::observe_syn(ctx, &ip, dst_port, &maps.auto, config),
            _ => auto::under_attack(&maps.auto, config),
        },
        Mode::Off => false,
    };
    let monitor = mode == Mode::Monitor;
    if let (Class::Syn, Some(ip)) = (packet.class, packet.ip)
        && !limit::admit(ctx, &ip, config, &maps.limit)
    {
        return match monitor {
            true => Verdict::pass(Reason::MonitorWouldDrop),
            false => Verdict::new(Action::Drop, Reason::SynSourceLimited),
        };
    }
    if !answering {
        return match packet.class {
            Class::Syn => Verdict::pass(Reason::SynBelowThreshold),
            _ => Verdict::PASS,
        };
    }
    let Some(scratch) = maps.scratch.get_ptr_mut(0) else {
        return Verdict::PASS;
    };
    // SAFETY: this CPU's own slot; XDP runs with preemption disabled.
    let scratch = unsafe { &mut *scratch };
    match packet.class {
        Class::Syn => cookie::answer_syn(ctx, &at, config, &maps.syn, scratch, monitor, rewrite),
        _ => ack::check_ack(ctx, &at, scratch, !all_ports, monitor),
    }
}

#[inline(always)]
fn port_listed(ports: &Array<u64>, port: u16) -> bool {
    match ports.get(u32::from(port >> 6)) {
        Some(word) => word & (1u64 << (port & 63)) != 0,
        None => false,
    }
}
