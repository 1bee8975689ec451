//! The TCP ports this host listens on, from the kernel's sock_diag interface: a dump of the
//! listening sockets only (`idiag_states` = TCPF_LISTEN), which the kernel answers from its
//! listening hash without walking the established table (inet_diag_dump_icsk(),
//! net/ipv4/inet_diag.c), so it stays cheap on a server with many connections.

use std::{collections::BTreeSet, io};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

use crate::Error;

/// The local ports of every listening TCP socket, IPv4 and IPv6, in this network namespace.
pub fn listening_ports() -> Result<BTreeSet<u16>, Error> {
    let mut ports = BTreeSet::new();
    for family in [AF_INET, AF_INET6] {
        dump(family, &mut ports)?;
    }
    Ok(ports)
}

fn dump(family: u8, ports: &mut BTreeSet<u16>) -> Result<(), Error> {
    let fail = |reason: String| Error::HostFacts {
        what: "the listening sockets (sock_diag)".into(),
        reason,
    };
    let io = |e: io::Error| fail(e.to_string());
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(io)?;
    socket.bind_auto().map_err(io)?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(io)?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let socket_id = match family {
        AF_INET => SocketId::new_v4(),
        _ => SocketId::new_v6(),
    };
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::LISTEN,
            socket_id,
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0).map_err(io)?;
    loop {
        let (bytes, _) = socket.recv_from_full().map_err(io)?;
        if bytes.is_empty() {
            return Ok(());
        }
        let mut at = 0;
        while at < bytes.len() {
            let reply = NetlinkMessage::<SockDiagMessage>::deserialize(&bytes[at..])
                .map_err(|e| fail(format!("unparsable reply: {e}")))?;
            let len = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                // No IPv6 in this kernel: no IPv6 listeners either.
                NetlinkPayload::Error(e)
                    if family == AF_INET6 && e.to_io().kind() == io::ErrorKind::NotFound =>
                {
                    return Ok(());
                }
                NetlinkPayload::Error(e) => return Err(fail(e.to_string())),
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    ports.insert(response.header.socket_id.source_port);
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            at += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_of_this_process_is_found_and_a_connected_socket_is_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let v6 = std::net::TcpListener::bind("[::1]:0").ok();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let outbound = client.local_addr().unwrap().port();
        let ports = listening_ports().unwrap();
        assert!(ports.contains(&port), "{ports:?}");
        assert!(!ports.contains(&outbound), "only listeners: {ports:?}");
        if let Some(v6) = v6 {
            assert!(ports.contains(&v6.local_addr().unwrap().port()));
        }
    }
}
