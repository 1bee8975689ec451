//! Per-CPU scratch memory for the SYN and ACK paths.

use aya_ebpf::bindings::bpf_sock_tuple;
use synguard_common::tcp::{MAX_OPTIONS_LEN, SYNACK_TCP_LEN, SynOptions};

use crate::{bpf::mem::Words, sock::Endpoints};

/// IPv4 options are at most 40 bytes (IHL 15).
pub const MAX_IP_OPTIONS_LEN: usize = 40;

/// Per-CPU scratch space for the SYN and ACK paths, kept in a map because the BPF stack (512
/// bytes) cannot hold it next to the rest.
#[repr(C)]
pub struct Scratch {
    pub ends: Endpoints,
    pub tuple: bpf_sock_tuple,
    /// The header handed to the cookie helpers (`tcp::write_cookie_probe`).
    pub probe: Words<24>,
    /// The SYN's options, and the parse cursor: see `read_syn_options`.
    pub options: [u8; MAX_OPTIONS_LEN],
    pub options_len: u64,
    pub options_at: u64,
    pub parsed: SynOptions,
    /// The SYN-ACK's TCP header, built here before it is copied into the frame.
    pub synack: Words<SYNACK_TCP_LEN>,
    /// The listener's address as a plain number (`listener::promise_for`).
    pub listener_addr: u64,
    /// How the SYN path answers (`cookie.rs`, `HOW_*`), and the ACK path whether it looks up;
    /// passed through memory like the address.
    pub how: u64,
    /// The packet's outcome, packed, passed through memory (`count::Outcome`).
    pub outcome: u64,
    /// The segment's header offsets, packed, passed through memory (`bpf::mem::opaque`).
    pub at_offsets: u64,
    /// The SYN's IPv4 options, the walk's cursor, and its result (`cookie::ipv4_options_plain`).
    pub ip_options: [u8; MAX_IP_OPTIONS_LEN],
    pub ip_options_len: u64,
    pub ip_options_at: u64,
    pub ip_options_plain: u64,
}
