//! The allow and deny lists, in the kernel (BPF_PROG_TEST_RUN): the longest matching prefix
//! decides, on IPv4 and IPv6, for every IP packet, and changes apply to the next packet.

use etherparse::PacketBuilder;
use synguard::config::lists::{Cidr, Lists};
use synguard_common::{
    Config, Mode, Reason,
    config::{flags, list},
};
use synguard_tests::{InKernel, XDP_DROP, XDP_PASS, XDP_TX, in_lab, syn_from};

const PORT: u16 = 80;

fn config(mode: Mode) -> Config {
    Config {
        mode: mode as u32,
        flags: Config::DEFAULT.flags | flags::LISTS,
        ..Config::DEFAULT
    }
}

fn cidr(text: &str) -> Cidr {
    text.parse().unwrap()
}

fn udp_from(src: [u8; 4]) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
        .ipv4(src, [198, 18, 0, 1], 64)
        .udp(5353, 53)
        .write(&mut frame, b"q")
        .unwrap();
    frame
}

/// Runs a frame; returns the XDP code and the decisions counted.
fn run(program: &mut InKernel, frame: &[u8]) -> (u32, Vec<Reason>) {
    let outcome = program.run(frame);
    (outcome.code, outcome.reasons())
}

#[test]
fn the_longest_matching_prefix_decides_on_ipv4_and_ipv6() {
    in_lab(PORT, || {
        let mut program = InKernel::load(&config(Mode::Cookie));
        let lists = Lists::new(
            vec![cidr("198.18.0.2/32"), cidr("fd00:198:18::2/128")],
            vec![cidr("198.18.0.0/16"), cidr("fd00:198:18::/64")],
        )
        .unwrap();
        program.lists.load(&lists).unwrap();

        let allowed = [("198.18.0.2", "v4"), ("fd00:198:18::2", "v6")];
        let denied = [
            ("198.18.0.3", "v4"),
            ("198.18.255.255", "v4"),
            ("fd00:198:18::3", "v6"),
        ];
        let unlisted = [("198.19.0.2", "v4"), ("fd00:198:19::2", "v6")];
        for (addr, family) in allowed {
            let (code, why) = run(&mut program, &syn_from(addr.parse().unwrap(), 40000, PORT));
            assert_eq!(
                (code, why),
                (XDP_PASS, vec![Reason::ListAllowed]),
                "{family} {addr}: passed, no cookie"
            );
        }
        for (addr, family) in denied {
            let (code, why) = run(&mut program, &syn_from(addr.parse().unwrap(), 40000, PORT));
            assert_eq!(
                (code, why),
                (XDP_DROP, vec![Reason::ListDenied]),
                "{family} {addr}"
            );
        }
        for (addr, family) in unlisted {
            let (code, _) = run(&mut program, &syn_from(addr.parse().unwrap(), 40000, PORT));
            assert_eq!(
                code, XDP_TX,
                "{family} {addr}: not listed, answered with a cookie"
            );
        }
        // Every IP packet, not only TCP.
        let (code, why) = run(&mut program, &udp_from([198, 18, 7, 7]));
        assert_eq!(
            (code, why),
            (XDP_DROP, vec![Reason::ListDenied]),
            "UDP from a denied source"
        );
        let (code, why) = run(&mut program, &udp_from([198, 18, 0, 2]));
        assert_eq!((code, why), (XDP_PASS, vec![Reason::ListAllowed]));
    });
}

#[test]
fn list_changes_apply_to_the_next_packet() {
    in_lab(PORT, || {
        let mut program = InKernel::load(&config(Mode::Cookie));
        let source: std::net::IpAddr = "198.18.0.2".parse().unwrap();
        let frame = syn_from(source, 40000, PORT);
        assert_eq!(run(&mut program, &frame).0, XDP_TX, "nothing listed yet");

        program
            .lists
            .insert(&cidr("198.18.0.0/16"), list::DENY)
            .unwrap();
        assert_eq!(run(&mut program, &frame).0, XDP_DROP, "denied");
        program
            .lists
            .insert(&cidr("198.18.0.2/32"), list::ALLOW)
            .unwrap();
        assert_eq!(
            run(&mut program, &frame).0,
            XDP_PASS,
            "allowed inside the denied /16"
        );
        assert_eq!(program.lists.entries().unwrap().len(), 2);

        assert!(program.lists.remove(&cidr("198.18.0.2/32")).unwrap());
        assert!(
            !program.lists.remove(&cidr("198.18.0.2/32")).unwrap(),
            "already gone"
        );
        assert_eq!(run(&mut program, &frame).0, XDP_DROP, "denied again");

        // Monitor mode counts what the deny list would drop, and passes.
        program.control.set_config(&config(Mode::Monitor)).unwrap();
        let (code, why) = run(&mut program, &frame);
        assert_eq!((code, why), (XDP_PASS, vec![Reason::MonitorWouldDrop]));

        // Off: no list applies.
        program.control.set_config(&config(Mode::Off)).unwrap();
        assert_eq!(run(&mut program, &frame), (XDP_PASS, vec![]));
    });
}

#[test]
fn ten_thousand_entries_load_and_match() {
    in_lab(PORT, || {
        let mut program = InKernel::load(&config(Mode::Cookie));
        // 10,000 /32s spread over 198.18.128.0/17, every third one allowed.
        let addr = |i: u32| [198, 18, 128 + (i / 256) as u8, (i % 256) as u8];
        let (mut allow, mut deny) = (Vec::new(), Vec::new());
        for i in 0..10_000u32 {
            let a = addr(i);
            let c = cidr(&format!("{}.{}.{}.{}/32", a[0], a[1], a[2], a[3]));
            if i % 3 == 0 {
                allow.push(c)
            } else {
                deny.push(c)
            }
        }
        let lists = Lists::new(allow, deny).unwrap();
        let started = std::time::Instant::now();
        program.lists.load(&lists).unwrap();
        eprintln!("10,000 entries loaded in {:?}", started.elapsed());
        assert_eq!(program.lists.entries().unwrap().len(), 10_000);
        for i in [0u32, 1, 2, 3, 4999, 9998, 9999] {
            let want = if i % 3 == 0 { XDP_PASS } else { XDP_DROP };
            let (code, _) = run(&mut program, &udp_from(addr(i)));
            assert_eq!(code, want, "entry {i}");
        }
        let (code, why) = run(&mut program, &udp_from(addr(10_000)));
        assert_eq!(
            (code, why),
            (XDP_PASS, vec![]),
            "the next address is not listed"
        );
    });
}
