//! Hostile clients on the control socket: malformed and foreign requests, a 10 MB request, a
//! client that sends one byte a second, and 500 clients at once. Each gets an error (or its
//! answer), nothing is half-applied, and the daemon keeps protecting and answering the others.

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    os::unix::net::UnixStream,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use synguard_lab::{HttpServer, Lab, Synguard, http_get};
use synguard_tests::status;

const PORT: u16 = 80;

/// Sends `bytes` as one request and returns the daemon's response.
fn exchange(socket: &str, bytes: &[u8]) -> Value {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // A daemon that stops reading early (a request too long) may close before all is written.
    let _ = stream.write_all(bytes);
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

/// A refusal whose error names `needle`.
fn refused(response: &Value, needle: &str) {
    assert_eq!(response["ok"], false, "{response}");
    let error = response["error"].as_str().unwrap_or_default();
    assert!(error.contains(needle), "{needle:?} missing: {response}");
}

#[test]
fn hostile_control_clients_are_refused_and_the_daemon_carries_on() {
    let lab = Lab::new().unwrap();
    let _http = HttpServer::start(&lab.server, PORT).unwrap();
    let _sg = Synguard::start(&lab.server, &["--mode", "cookie"]).unwrap();
    let iface = lab.server.iface.clone();
    let socket = format!("/run/synguard/control-{iface}.sock");
    let target: SocketAddr = (lab.server.ipv4, PORT).into();
    let serves = || {
        http_get(&lab.client, target, "/", Duration::from_secs(3))
            .expect("a legitimate request through cookies");
    };
    serves();
    let before = status(&iface);

    // Malformed, foreign and out-of-range requests, each refused with its reason.
    for (request, needle) in [
        (&b"not json\n"[..], "malformed request"),
        (b"\xff\xfe\n", "not UTF-8"),
        (b"{}\n", "no protocol version"),
        (
            br#"{"version":2,"request":{"cmd":"status"}}"#,
            "protocol version 2 is not spoken here",
        ),
        (
            br#"{"version":1,"request":{"cmd":"status"},"urgent":true}"#,
            "unknown field `urgent`",
        ),
        (
            br#"{"version":1,"request":{"cmd":"set","change":{"colour":"blue"}}}"#,
            "unknown field `colour`",
        ),
        (
            br#"{"version":1,"request":{"cmd":"set","change":{"mode":"fast"}}}"#,
            "'fast' is not a mode",
        ),
        // Valid JSON, a value the command line would never send: the daemon checks it too,
        // and the mode in the same change is not applied either.
        (
            br#"{"version":1,"request":{"cmd":"set","change":{"mode":"off","source_prefix_v4":99}}}"#,
            "source-prefix-v4: 99 is not in 1..=32",
        ),
        (
            br#"{"version":1,"request":{"cmd":"list_add","list":"deny","cidrs":["198.18.0.0/33"]}}"#,
            "198.18.0.0/33",
        ),
        (br#"{"version":1,"request":{"cmd":"reboot"}}"#, "unknown variant"),
    ] {
        let mut line = request.to_vec();
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        refused(&exchange(&socket, &line), needle);
    }

    // 10 MB in one request: read up to the limit, then refused.
    let huge = vec![b'a'; 10 << 20];
    refused(&exchange(&socket, &huge), "request longer than 1024 KiB");

    thread::scope(|scope| {
        // A client that sends one byte a second is cut off after the request time...
        let slow = scope.spawn(|| {
            let mut stream = UnixStream::connect(&socket).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(1)))
                .unwrap();
            let started = Instant::now();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            for byte in br#"{"version":1,"request":{"cmd":"status"}}"#.iter().take(15) {
                let _ = stream.write_all(&[*byte]);
                let mut line = String::new();
                if reader.read_line(&mut line).is_ok() && !line.is_empty() {
                    return (
                        started.elapsed(),
                        serde_json::from_str::<Value>(&line).unwrap(),
                    );
                }
            }
            panic!("a client sending a byte a second was never cut off");
        });
        // ...while 500 clients at once, half of them sending garbage, all get their answer.
        let crowd: Vec<_> = (0..500)
            .map(|i| {
                let socket = socket.clone();
                scope.spawn(move || match i % 2 {
                    0 => exchange(
                        &socket,
                        b"{\"version\":1,\"request\":{\"cmd\":\"status\"}}\n",
                    ),
                    _ => exchange(&socket, b"{\"version\":1,\n"),
                })
            })
            .collect();
        for (i, client) in crowd.into_iter().enumerate() {
            let response = client.join().unwrap();
            match i % 2 {
                0 => assert_eq!(response["ok"], true, "{response}"),
                _ => refused(&response, "malformed request"),
            }
        }
        // The CLI is answered while the slow client is still trickling.
        assert_eq!(status(&iface)["mode"], "cookie");
        let (after, response) = slow.join().unwrap();
        refused(&response, "no complete request within 5 s");
        assert!(after < Duration::from_secs(10), "cut off after {after:?}");
    });

    // Nothing was half-applied, and protection never stopped.
    let after = status(&iface);
    for key in ["mode", "limits", "lists", "ports", "program_id"] {
        assert_eq!(after[key], before[key], "{key} changed");
    }
    serves();
}
