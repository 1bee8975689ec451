//! The control protocol's messages. Every request travels in an [`Envelope`] that names the
//! protocol version; the daemon refuses another version, and any field it does not know, with
//! an error that says so. Replies are typed too: the daemon serializes the very structs the
//! client reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{lists::Cidr, tunables::TunablesChange};

/// The protocol this synguard speaks. Raise it with any change a peer of the previous version
/// would misread.
pub const PROTOCOL_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub version: u32,
    pub request: Request,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListKind {
    Allow,
    Deny,
}

impl ListKind {
    pub fn name(self) -> &'static str {
        match self {
            ListKind::Allow => "allow",
            ListKind::Deny => "deny",
        }
    }

    pub fn other(self) -> ListKind {
        match self {
            ListKind::Allow => ListKind::Deny,
            ListKind::Deny => ListKind::Allow,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status,
    /// Tunables to change, all or none.
    Set {
        change: TunablesChange,
    },
    ListShow {
        list: ListKind,
    },
    ListAdd {
        list: ListKind,
        cidrs: Vec<CidrText>,
    },
    ListDel {
        list: ListKind,
        cidrs: Vec<CidrText>,
    },
    Detach,
}

/// A CIDR on the wire, as text; parsed with the command line's parser.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CidrText(#[serde(with = "crate::config::text::display")] pub Cidr);

/// Decodes a request line: first its version, so that a peer of another version is told so
/// rather than about a field it added; then the request, strictly.
pub fn decode_request(line: &str) -> Result<Request, String> {
    #[derive(Deserialize)]
    struct Version {
        version: Option<u32>,
    }
    let version = serde_json::from_str::<Version>(line)
        .map_err(|e| format!("malformed request: {e}"))?
        .version;
    match version {
        Some(PROTOCOL_VERSION) => {}
        Some(other) => {
            return Err(format!(
                "protocol version {other} is not spoken here (this synguard speaks version \
                 {PROTOCOL_VERSION}); use the synguard binary that runs the daemon"
            ));
        }
        None => {
            return Err(format!(
                "malformed request: no protocol version (this synguard speaks version \
                 {PROTOCOL_VERSION})"
            ));
        }
    }
    serde_json::from_str::<Envelope>(line)
        .map(|envelope| envelope.request)
        .map_err(|e| format!("malformed request: {e}"))
}

/// A response: `data` on success, `error` on refusal.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response<T> {
    pub version: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
}

fn none<T>() -> Option<T> {
    None
}

impl<T> Response<T> {
    pub fn ok(data: T) -> Response<T> {
        Response {
            version: PROTOCOL_VERSION,
            ok: true,
            error: None,
            data: Some(data),
        }
    }

    pub fn error(message: impl Into<String>) -> Response<T> {
        Response {
            version: PROTOCOL_VERSION,
            ok: false,
            error: Some(message.into()),
            data: None,
        }
    }
}

/// Whatever the daemon answers; the client decodes the variant its request implies.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Reply {
    Status(Box<Status>),
    Changed(Changed),
    List(ListEntries),
    ListChanged(ListChanged),
    Detached(Detached),
}

/// `status`: what runs, how it is set, what it has seen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    pub iface: String,
    pub xdp_mode: String,
    pub program_id: u32,
    pub pinned: Option<String>,
    pub took_over: bool,
    /// Whether SYNs from sources that cannot own a socket are answered without the socket
    /// lookup (the owner filter is built and kept; docs/design.md, "The fast path").
    pub fast_path: bool,
    pub uptime_seconds: u64,
    pub mode: String,
    pub under_attack: bool,
    pub syn_rate: u64,
    pub ports: String,
    pub auto: AutoStatus,
    pub limits: Limits,
    pub lists: ListCounts,
    pub sysctls: BTreeMap<String, String>,
    pub packets: Packets,
    pub decisions: BTreeMap<String, u64>,
    pub sources_metered: u64,
    pub top_sources: Vec<TopSource>,
    /// SYN-ACKs sent and cookies completed, per protected port with a listener (`other`:
    /// every port without a row of its own).
    pub handshakes: Vec<PortHandshakeCounts>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortHandshakeCounts {
    pub port: String,
    /// SYN-ACKs sent from XDP.
    pub answered: u64,
    /// ACKs with a valid cookie.
    pub completed: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoStatus {
    /// As given: SYN/s, or a multiple of the baseline ("8x").
    pub threshold: String,
    pub threshold_in_force: u32,
    pub threshold_min: u32,
    pub baseline: Option<f64>,
    pub port_threshold: u32,
    pub hold_ms: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// 0: no per-source limit.
    pub syn_rate_per_source: u32,
    pub syn_burst_per_source: u32,
    pub source_prefix_v4: u32,
    pub source_prefix_v6: u32,
    /// 0: no cap.
    pub max_syn_pass_rate: u32,
    pub max_synack_rate: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListCounts {
    pub allow: usize,
    pub deny: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Packets {
    pub syn: ClassPackets,
    pub ack: ClassPackets,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassPackets {
    pub pass: u64,
    pub drop: u64,
    pub tx: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopSource {
    pub source: String,
    /// Of the sampled SYNs, 0 to 1.
    pub share: f64,
}

/// `set`: the keys changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Changed {
    pub changed: Vec<String>,
}

/// `allow list`, `deny list`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListEntries {
    pub list: ListKind,
    pub cidrs: Vec<String>,
}

/// `allow add/del`, `deny add/del`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListChanged {
    pub list: ListKind,
    pub changed: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detached {
    pub detached: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(request: &Request) -> String {
        serde_json::to_string(&Envelope {
            version: PROTOCOL_VERSION,
            request: request.clone(),
        })
        .unwrap()
    }

    #[test]
    fn every_request_survives_the_wire() {
        let cidr = CidrText("192.0.2.0/24".parse().unwrap());
        for request in [
            Request::Status,
            Request::Set {
                change: TunablesChange {
                    syn_rate_per_source: Some(5),
                    ..TunablesChange::default()
                },
            },
            Request::ListShow {
                list: ListKind::Allow,
            },
            Request::ListAdd {
                list: ListKind::Deny,
                cidrs: vec![cidr.clone()],
            },
            Request::ListDel {
                list: ListKind::Allow,
                cidrs: vec![cidr],
            },
            Request::Detach,
        ] {
            assert_eq!(decode_request(&line(&request)), Ok(request));
        }
    }

    #[test]
    fn unknown_fields_other_versions_and_bad_values_are_refused_with_a_reason() {
        let refused = |text: &str, needle: &str| {
            let error = decode_request(text).unwrap_err();
            assert!(error.contains(needle), "{text}: {error}");
        };
        refused(
            r#"{"version":2,"request":{"cmd":"status"}}"#,
            "protocol version 2 is not spoken here",
        );
        refused(r#"{"request":{"cmd":"status"}}"#, "no protocol version");
        refused(
            r#"{"version":1,"request":{"cmd":"status"},"urgent":true}"#,
            "unknown field `urgent`",
        );
        refused(
            r#"{"version":1,"request":{"cmd":"list_show","list":"allow","all":true}}"#,
            "unknown field `all`",
        );
        refused(
            r#"{"version":1,"request":{"cmd":"set","change":{"colour":"blue"}}}"#,
            "unknown field `colour`",
        );
        refused(
            r#"{"version":1,"request":{"cmd":"set","change":{"mode":"fast"}}}"#,
            "'fast' is not a mode",
        );
        refused(
            r#"{"version":1,"request":{"cmd":"list_add","list":"deny","cidrs":["300.0.0.0/8"]}}"#,
            "300.0.0.0/8",
        );
        refused(
            r#"{"version":1,"request":{"cmd":"reboot"}}"#,
            "unknown variant",
        );
        refused("not json", "malformed request");
        refused(r#"{"version":"1"}"#, "malformed request");
    }

    #[test]
    fn a_reply_is_read_back_as_the_type_it_was_written_from() {
        let reply = Response::ok(Reply::ListChanged(ListChanged {
            list: ListKind::Deny,
            changed: vec!["192.0.2.0/24".into()],
        }));
        let text = serde_json::to_string(&reply).unwrap();
        let read: Response<ListChanged> = serde_json::from_str(&text).unwrap();
        assert_eq!(read.data.unwrap().changed, ["192.0.2.0/24"]);
        // The wrong type is an error, not a reply full of defaults.
        assert!(serde_json::from_str::<Response<Status>>(&text).is_err());
        let refusal: Response<Status> =
            serde_json::from_str(&serde_json::to_string(&Response::<Reply>::error("no")).unwrap())
                .unwrap();
        assert_eq!((refusal.ok, refusal.error.as_deref()), (false, Some("no")));
    }
}
