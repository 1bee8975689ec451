//! What the controller reads from untrusted places, under generated input (proptest; libFuzzer
//! needs a nightly toolchain these machines do not have): the config file, CIDR and port
//! lists, `set` values and the control socket's request decoder. Whatever the bytes, each
//! parser returns a value or a one-line error, never panics; what it accepts, it reads back
//! the same from its own rendering.

use proptest::prelude::*;
use synguard::{
    cli::{config_file, tune},
    config::{lists::Cidr, ports::PortSet},
    control::protocol::{Envelope, PROTOCOL_VERSION, decode_request},
};

/// Text that looks like what each parser reads, with hostile bytes mixed in.
fn shaped(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(
            prop::sample::select(alphabet.chars().collect::<Vec<_>>()),
            0..max
        )
        .prop_map(|c| c.into_iter().collect()),
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..max)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

fn one_line(error: &str) {
    assert!(!error.trim().is_empty(), "an empty error");
    assert!(!error.contains('\n'), "a multi-line error: {error:?}");
}

/// Keys a config file may hold, and one it may not.
const KEYS: [&str; 12] = [
    "interface",
    "mode",
    "ports",
    "auto-threshold",
    "auto_hold_ms",
    "syn-rate-per-source",
    "allow",
    "deny",
    "metrics-addr",
    "no-pin",
    "max-synack-rate",
    "bogus",
];

fn config_text() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        shaped("0123456789abcdefkmg.,-/:[] ", 24).prop_map(|s| format!("{s:?}")),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<f64>().prop_map(|x| format!("{x:?}")),
        prop::collection::vec(shaped("0123456789./:abcdef", 20), 0..4)
            .prop_map(|items| format!("{items:?}")),
        shaped("{}[]=\"'#\n", 16),
    ];
    prop_oneof![
        prop::collection::vec((prop::sample::select(KEYS.to_vec()), value), 0..6).prop_map(
            |lines| lines
                .into_iter()
                .map(|(k, v)| format!("{k} = {v}\n"))
                .collect::<String>()
        ),
        shaped("[]=\"'#\nabc123 ", 200),
    ]
}

fn request_line() -> impl Strategy<Value = String> {
    let commands = vec![
        "status",
        "list_show",
        "detach",
        "set",
        "list_add",
        "list_del",
    ];
    prop_oneof![
        shaped("{}[]\":,0123456789 abcdefghijklmnopqrstuvwxyz_", 120),
        (
            any::<u32>(),
            shaped("abcdefghijklmnopqrstuvwxyz_", 12),
            shaped("{}[]\":,0123456789 abc", 40)
        )
            .prop_map(|(v, cmd, rest)| format!(
                r#"{{"version":{v},"request":{{"cmd":"{cmd}"{rest}}}}}"#
            )),
        (
            prop::sample::select(commands),
            shaped("{}[]\":,0123456789./ abcdefghijklmnopqrstuvwxyz_", 60)
        )
            .prop_map(|(cmd, rest)| format!(
                r#"{{"version":{PROTOCOL_VERSION},"request":{{"cmd":"{cmd}"{rest}}}}}"#
            )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 3000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_config_file_is_read_or_refused_in_one_line(text in config_text()) {
        let dir = std::env::temp_dir().join(format!("synguard-untrusted-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("synguard.toml");
        std::fs::write(&path, &text).unwrap();
        if let Err(e) = config_file::read(&path, true) {
            one_line(&e.to_string());
        }
    }

    #[test]
    fn a_cidr_is_read_back_as_written(text in shaped("0123456789abcdef.:/", 48)) {
        match text.parse::<Cidr>() {
            Ok(cidr) => prop_assert_eq!(cidr.to_string().parse::<Cidr>().unwrap(), cidr),
            Err(e) => one_line(&e.to_string()),
        }
    }

    #[test]
    fn a_port_list_is_read_back_as_written(text in shaped("0123456789,-* ", 40)) {
        match text.parse::<PortSet>() {
            Ok(ports) => {
                let again = ports.to_string().parse::<PortSet>().unwrap();
                prop_assert_eq!(again.words(), ports.words());
            }
            Err(e) => one_line(&e.to_string()),
        }
    }

    #[test]
    fn set_values_are_taken_or_refused_in_one_line(
        pairs in prop::collection::vec(
            (prop::sample::select(tune::SETTABLE.to_vec()), shaped("0123456789kmgs.,-/:x", 16))
                .prop_map(|(k, v)| format!("{k}={v}")),
            1..4,
        ),
    ) {
        if let Err(e) = tune::parse(&pairs) {
            one_line(&e.to_string());
        }
    }

    #[test]
    fn a_control_request_is_decoded_or_refused_in_one_line(line in request_line()) {
        match decode_request(&line) {
            Ok(request) => {
                // What was accepted means the same once encoded again.
                let envelope = Envelope { version: PROTOCOL_VERSION, request: request.clone() };
                let again = decode_request(&serde_json::to_string(&envelope).unwrap()).unwrap();
                prop_assert_eq!(again, request);
            }
            Err(e) => one_line(&e),
        }
    }
}
