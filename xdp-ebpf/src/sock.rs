//! The kernel's socket table, seen from XDP: is there a listener, a connection, or nothing for
//! this segment? (`bpf_skc_lookup_tcp`, net/core/filter.c; it finds established, TIME_WAIT and
//! request sockets first, then listeners, as the stack would.)

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{
        BPF_F_CURRENT_NETNS, bpf_sock, bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2,
    },
    helpers::generated::{bpf_sk_release, bpf_skc_lookup_tcp},
    programs::XdpContext,
};

use crate::{
    bpf::mem::Words,
    parse::{Addresses, TcpAt, addresses, ptr_at},
};

/// TCP_ESTABLISHED and TCP_LISTEN in include/net/tcp_states.h. A TIME_WAIT socket reads as
/// TCP_TIME_WAIT and a request socket as TCP_NEW_SYN_RECV (`skc_state`, which
/// bpf_sock_convert_ctx_access() reads for every kind, net/core/filter.c).
const TCP_ESTABLISHED: u32 = 1;
const TCP_LISTEN: u32 = 10;

/// Addresses and ports of a segment, copied out of the packet (network byte order). IPv4
/// addresses take the first 4 bytes, the rest zero.
#[repr(C)]
pub struct Endpoints {
    pub src: Words<16>,
    pub dst: Words<16>,
    pub src_port: [u8; 2],
    pub dst_port: [u8; 2],
    pub ipv6: bool,
}

impl Endpoints {
    /// Fills `ends` from the packet (in scratch memory: the stack has no room for it).
    #[inline(always)]
    pub fn read_into(ctx: &XdpContext, at: &TcpAt, ends: &mut Endpoints) -> Option<()> {
        ends.ipv6 = at.ipv6;
        ends.src.zero();
        ends.dst.zero();
        match addresses(ctx, &at.ip())? {
            Addresses::V6 { src, dst } => {
                ends.src.0.copy_from_slice(src);
                ends.dst.0.copy_from_slice(dst);
            }
            Addresses::V4 { src, dst } => {
                ends.src.0[..4].copy_from_slice(src);
                ends.dst.0[..4].copy_from_slice(dst);
            }
        }
        let ports = ptr_at::<[u8; 4]>(ctx, at.l4)?;
        // SAFETY: bounds checked by `ptr_at`; alignment 1.
        let ports = unsafe { &*ports };
        ends.src_port = [ports[0], ports[1]];
        ends.dst_port = [ports[2], ports[3]];
        Some(())
    }

    #[inline(always)]
    pub fn dst_port(&self) -> u16 {
        u16::from_be_bytes(self.dst_port)
    }

    #[inline(always)]
    pub fn src_port(&self) -> u16 {
        u16::from_be_bytes(self.src_port)
    }

    #[inline(always)]
    pub fn src_v4(&self) -> [u8; 4] {
        let src = &self.src.0;
        [src[0], src[1], src[2], src[3]]
    }

    #[inline(always)]
    pub fn dst_v4(&self) -> [u8; 4] {
        let dst = &self.dst.0;
        [dst[0], dst[1], dst[2], dst[3]]
    }
}

/// What the socket lookup found. A `Listener` holds a reference that must be given back with
/// [`release`].
pub enum Found {
    Nothing,
    Listener(*mut bpf_sock),
    /// An established, TIME_WAIT or request socket: the kernel owns this 4-tuple.
    /// `established`: it is a full socket in TCP_ESTABLISHED.
    Connection {
        established: bool,
    },
}

/// Looks the segment's 4-tuple up. `tuple` is scratch space (in a per-CPU map: the BPF stack
/// is too small to hold it next to everything else).
#[inline(always)]
pub fn lookup(ctx: &XdpContext, ends: &Endpoints, tuple: &mut bpf_sock_tuple) -> Found {
    let size = if ends.ipv6 {
        tuple.__bindgen_anon_1.ipv6 = bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2 {
            saddr: words(&ends.src),
            daddr: words(&ends.dst),
            sport: u16::from_ne_bytes(ends.src_port),
            dport: u16::from_ne_bytes(ends.dst_port),
        };
        size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2>()
    } else {
        tuple.__bindgen_anon_1.ipv4 = bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
            saddr: ends.src.u32_at(0),
            daddr: ends.dst.u32_at(0),
            sport: u16::from_ne_bytes(ends.src_port),
            dport: u16::from_ne_bytes(ends.dst_port),
        };
        size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>()
    };
    // SAFETY: the tuple lives on the stack for the call; the context is the program's own.
    let sk = unsafe {
        bpf_skc_lookup_tcp(
            ctx.ctx as *mut c_void,
            tuple,
            size as u32,
            BPF_F_CURRENT_NETNS as u64,
            0,
        )
    };
    if sk.is_null() {
        return Found::Nothing;
    }
    // SAFETY: a non-null result is a valid socket until released.
    let state = unsafe { (*sk).state };
    if state == TCP_LISTEN {
        Found::Listener(sk)
    } else {
        release(sk);
        Found::Connection {
            established: state == TCP_ESTABLISHED,
        }
    }
}

#[inline(always)]
pub fn release(sk: *mut bpf_sock) {
    // SAFETY: `sk` came from `lookup` and is released exactly once.
    unsafe { bpf_sk_release(sk as *mut c_void) };
}

/// 16 address bytes as the four network-order words the tuple holds.
#[inline(always)]
fn words(addr: &Words<16>) -> [u32; 4] {
    [
        addr.u32_at(0),
        addr.u32_at(1),
        addr.u32_at(2),
        addr.u32_at(3),
    ]
}
