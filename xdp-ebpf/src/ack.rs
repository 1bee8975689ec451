//! ACK-flood protection: an ACK to a protected port that belongs to no socket must carry a
//! valid cookie, or it is dropped before the kernel spends anything on it.

use aya_ebpf::{
    bindings::{iphdr, ipv6hdr, tcphdr},
    helpers::generated::{bpf_tcp_raw_check_syncookie_ipv4, bpf_tcp_raw_check_syncookie_ipv6},
    programs::XdpContext,
};
use synguard_common::{Action, Reason};

use crate::{
    bpf::mem::opaque,
    cookie,
    count::Verdict,
    established, local, owners,
    parse::{TcpAt, ptr_at},
    scratch::Scratch,
    sock::{self, Endpoints, Found},
};

/// `listed_port`: the port was named with `--ports`, so it is protected even without a
/// listener. With the default (every port with a listener), an ACK to a port nobody listens
/// on is not ours to judge: the kernel answers it with an RST as always.
#[inline(always)]
pub fn check_ack(
    ctx: &XdpContext,
    at: &TcpAt,
    scratch: &mut Scratch,
    listed_port: bool,
    monitor: bool,
) -> Verdict {
    if Endpoints::read_into(ctx, at, &mut scratch.ends).is_none() {
        return Verdict::PASS;
    }
    let ends = &scratch.ends;
    let owners_state = owners::state();
    // Read before the lookup, so a close during it makes what it finds stale at once.
    let closes = owners::closes(owners_state);
    if let Some(closes) = closes
        && established::known(ends, closes)
    {
        return Verdict::pass(Reason::AckEstablished);
    }
    let source = owners::source_key(ends);
    // Without the lookup when the source cannot own a socket, so there is none to find, and
    // the port is protected whether or not anyone listens (a listed port), or a listener is
    // known to be there (`cookie::listener_known`).
    let lookup = owners::may_own(owners_state, source)
        || !(listed_port || cookie::listener_known(ends, owners::listener_epoch(owners_state)));
    // Through memory, so that the ways to each answer meet again here.
    let lookup = opaque(&mut scratch.how, lookup as u64) != 0;
    if lookup {
        match sock::lookup(ctx, ends, &mut scratch.tuple) {
            Found::Connection { established } => {
                owners::note(source);
                if let (true, Some(closes)) = (established, closes) {
                    established::learn(ends, closes);
                }
                return Verdict::pass(Reason::AckEstablished);
            }
            Found::Listener(sk) => sock::release(sk),
            Found::Nothing if !listed_port => return Verdict::PASS,
            Found::Nothing => {}
        }
    }
    if !local::addressed_here(ctx, ends) {
        return Verdict::pass(Reason::NotLocal);
    }
    // __cookie_v4_check()/__cookie_v6_check(): the ACK number minus one must be a cookie
    // issued for this 4-tuple and the client's ISN within the last two minutes.
    let Some(tcp) = ptr_at::<[u8; 20]>(ctx, at.l4) else {
        return Verdict::PASS;
    };
    let th = tcp as *mut tcphdr;
    // SAFETY: the helpers read fixed-size headers (20-byte TCP, 20- or 40-byte IP) that
    // `ptr_at` checked against the frame.
    let verdict = unsafe {
        if ends.ipv6 {
            let Some(ip) = ptr_at::<[u8; 40]>(ctx, at.l3) else {
                return Verdict::PASS;
            };
            bpf_tcp_raw_check_syncookie_ipv6(ip as *mut ipv6hdr, th)
        } else {
            let Some(ip) = ptr_at::<[u8; 20]>(ctx, at.l3) else {
                return Verdict::PASS;
            };
            bpf_tcp_raw_check_syncookie_ipv4(ip as *mut iphdr, th)
        }
    };
    match (verdict == 0, monitor) {
        (true, _) => {
            // The kernel makes a socket of it.
            owners::note(source);
            Verdict::pass(Reason::AckCookieValid)
        }
        (false, true) => Verdict::pass(Reason::MonitorWouldDrop),
        (false, false) => Verdict::new(Action::Drop, Reason::AckForged),
    }
}
