//! What a SYN-ACK to this listener promises: read from the listener's own `struct sock`, as the
//! kernel reads it for its cookie SYN-ACK, combined with the host's facts by
//! `synguard_common::promise`, and cached per CPU.
//!
//! The fields are read with `bpf_probe_read_kernel` at offsets the controller resolved from
//! the running kernel's BTF (`KernelLayout`), so no field offset is compiled in. Reading them
//! takes about a dozen helper calls, so each CPU keeps the result for a listener in a small
//! direct-mapped table ([`ListenerSlot`]) and reads it again after [`REFRESH_NS`], when the
//! host's facts change (their generation), or when another listener, or a client on a route of
//! another class, takes the slot. A
//! `setsockopt` on a listener is therefore honoured within 10 ms; a host change (sysctl, MTU,
//! route), polled by the controller, from the next SYN after the poll sees it.

use core::ffi::c_void;

use aya_ebpf::{helpers::generated::bpf_loop, maps::lpm_trie::Key};
use synguard_common::{
    LISTENER_SLOTS,
    promise::{
        self, HostFacts, KernelLayout, ListenerFacts, Promise, ROUTE_CLASSES, RouteFacts, route,
    },
};

use crate::{
    bpf::mem::{Words, read_kernel as read},
    maps::{
        SYNGUARD_HOST, SYNGUARD_LAYOUT, SYNGUARD_LISTENERS, SYNGUARD_ROUTE_CLASSES,
        SYNGUARD_ROUTES_V4, SYNGUARD_ROUTES_V6,
    },
};

/// How long a CPU trusts what it read of a listener.
pub const REFRESH_NS: u64 = 10_000_000;

/// One slot of the per-CPU listener table (`LISTENERS_MAP`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ListenerSlot {
    /// The listener's address, with bit 0 set for facts read for IPv6 SYNs (a dual-stack
    /// listener answers IPv4 SYNs with its IPv4 settings); 0 when empty.
    pub key: u64,
    /// When the facts were read, and the host facts' generation they were combined with.
    pub at_ns: u64,
    pub generation: u32,
    /// 1 when `promise` holds; 0 when the facts could not be read (SYNs go to the kernel).
    pub valid: u32,
    /// The route class the promise was made for: 0 for a family whose routes all agree, the
    /// class plus 1 for one looked up per client.
    pub class: u32,
    pub _pad: u32,
    pub promise: Promise,
}

const _: () = assert!(size_of::<ListenerSlot>() == 48 && LISTENER_SLOTS.is_power_of_two());

/// Why a SYN's listener gets no promise.
pub enum NoPromise {
    /// The host's facts are not in, or differ between clients.
    Host,
    /// The listener's fields could not be read (no layout, or a failed read).
    Listener,
}

/// The facts of the route to `client`, and its class (0: the family's routes all agree).
#[inline(always)]
fn route_to(
    client: &Words<16>,
    ipv6: bool,
    host: &'static HostFacts,
) -> Option<(&'static RouteFacts, u32)> {
    let family = host.route(ipv6);
    match family.known {
        route::UNIFORM => Some((family, 0)),
        route::PER_CLIENT => {
            let class = if ipv6 {
                *SYNGUARD_ROUTES_V6.get(Key::new(128, client.0))?
            } else {
                let c = &client.0;
                *SYNGUARD_ROUTES_V4.get(Key::new(32, [c[0], c[1], c[2], c[3]]))?
            };
            if class >= ROUTE_CLASSES {
                return None;
            }
            let index = class + if ipv6 { ROUTE_CLASSES } else { 0 };
            Some((SYNGUARD_ROUTE_CLASSES.get(index)?, class + 1))
        }
        _ => None,
    }
}

/// The promise for a SYN from `client` to the listener at kernel address `addr`, and the host
/// facts it was made with.
#[inline(always)]
pub fn promise_for(
    addr: u64,
    client: &Words<16>,
    ipv6: bool,
    now: u64,
) -> Result<(&'static Promise, &'static HostFacts), NoPromise> {
    let host = SYNGUARD_HOST.get(0).ok_or(NoPromise::Host)?;
    let (route, class) = route_to(client, ipv6, host).ok_or(NoPromise::Host)?;
    let key = addr | u64::from(ipv6);
    // Kernel objects are at least 8-byte aligned: the low bits carry no information.
    let slot = ((addr >> 6) ^ (addr >> 16)) as u32 & (LISTENER_SLOTS - 1);
    let slot = SYNGUARD_LISTENERS
        .get_ptr_mut(slot)
        .ok_or(NoPromise::Listener)?;
    // SAFETY: this CPU's own slot; XDP runs with preemption disabled. The promise is handed
    // out by reference: it stays put for the rest of this run, and copying it costs a few
    // dozen instructions per SYN.
    let slot: &'static mut ListenerSlot = unsafe { &mut *slot };
    let fresh = slot.key == key
        && slot.class == class
        && slot.generation == host.generation
        && now.wrapping_sub(slot.at_ns) < REFRESH_NS;
    if !fresh {
        slot.key = key;
        slot.at_ns = now;
        slot.generation = host.generation;
        slot.class = class;
        slot.valid = 0;
        let layout = SYNGUARD_LAYOUT.get(0).ok_or(NoPromise::Listener)?;
        let mut step_ctx = RefreshCtx {
            slot: slot as *mut ListenerSlot,
            layout: layout as *const KernelLayout,
            host: host as *const HostFacts,
            route: route as *const RouteFacts,
        };
        // SAFETY: `refresh_step` is a BPF subprogram with the callback signature bpf_loop
        // expects, and `step_ctx` lives on this stack frame for the whole call.
        unsafe {
            bpf_loop(
                1,
                refresh_step as *mut c_void,
                &mut step_ctx as *mut RefreshCtx as *mut c_void,
                0,
            );
        }
        if slot.valid == 2 {
            // The host facts are not in: not cached, the controller may fix them any moment.
            slot.key = 0;
            return Err(NoPromise::Host);
        }
    }
    if slot.valid == 1 {
        Ok((&slot.promise, host))
    } else {
        Err(NoPromise::Listener)
    }
}

/// What `bpf_loop` hands `refresh_step`: pointers to map memory, kept on the stack.
#[repr(C)]
struct RefreshCtx {
    slot: *mut ListenerSlot,
    layout: *const KernelLayout,
    host: *const HostFacts,
    route: *const RouteFacts,
}

/// Reads the listener behind `slot.key` and fills `slot.promise`: `valid` 1 on success, 2 when
/// the host's facts are not in, 0 when the listener could not be read. Returns 1 (stop).
///
/// Why a bpf_loop callback for one step: the promise takes a few dozen branches on values read
/// from the kernel, and inlined, the verifier walked each of their combinations through the
/// whole rest of the SYN path, past its one-million-instruction budget. The callback leaves its
/// result in map memory, which the caller reads back as unknown values, so every way through
/// the callback meets again at its return (`parse_step` in cookie.rs does the same).
#[inline(never)]
extern "C" fn refresh_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `RefreshCtx` passed to bpf_loop; its pointers are to this CPU's
    // slot and to the two one-slot arrays, all live for the call.
    let (slot, layout, host, route) = unsafe {
        let ctx = &*(ctx as *const RefreshCtx);
        (&mut *ctx.slot, &*ctx.layout, &*ctx.host, &*ctx.route)
    };
    let ipv6 = slot.key & 1 == 1;
    let addr = slot.key & !1;
    if layout.ready != 1 {
        return 1;
    }
    let Some(facts) = read_facts(addr, ipv6, layout) else {
        return 1;
    };
    match promise::promise(&facts, host, route, ipv6) {
        Ok(promise) => {
            slot.promise = promise;
            slot.valid = 1;
        }
        Err(promise::Unknown::Host) => slot.valid = 2,
    }
    1
}

/// Reads the listener fields the kernel's SYN-ACK depends on.
#[inline(always)]
fn read_facts(addr: u64, ipv6: bool, layout: &KernelLayout) -> Option<ListenerFacts> {
    let at = |offset: u32| addr.wrapping_add(u64::from(offset));
    let (tos, ttl) = if ipv6 {
        let np = read::<u64>(at(layout.inet_pinet6))?;
        if np == 0 {
            return None;
        }
        let np_at = |offset: u32| np.wrapping_add(u64::from(offset));
        (
            read::<u8>(np_at(layout.ipv6_tclass))?,
            read::<i16>(np_at(layout.ipv6_hop_limit))?,
        )
    } else {
        (
            read::<u8>(at(layout.inet_tos))?,
            read::<i16>(at(layout.inet_uc_ttl))?,
        )
    };
    Some(ListenerFacts {
        rcvbuf: read::<i32>(at(layout.sk_rcvbuf))?,
        userlocks: read::<u8>(at(layout.sk_userlocks))?,
        window_clamp: read::<u32>(at(layout.tcp_window_clamp))?,
        user_mss: read::<u16>(at(layout.tcp_user_mss))?,
        scaling_ratio: read::<u8>(at(layout.tcp_scaling_ratio))?,
        tos,
        ttl,
        pmtudisc: read::<u8>(at(layout.inet_pmtudisc))?,
    })
}
