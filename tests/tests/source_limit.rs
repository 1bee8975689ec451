//! The per-source SYN rate limit, in the kernel (BPF_PROG_TEST_RUN): the burst then the rate,
//! sources aggregated by prefix on IPv4 and IPv6, sources under the limit untouched, the allow
//! list above it, changes while running, and random sources costing no buckets.

use std::{net::IpAddr, thread::sleep, time::Duration};

use synguard::{
    config::lists::{Cidr, Lists},
    config::settings::SourceLimit,
};
use synguard_common::{Config, Mode, Reason, config::flags};
use synguard_tests::{InKernel, XDP_DROP, XDP_PASS, XDP_TX, in_lab, syn_from};

const PORT: u16 = 80;

fn limited(mode: Mode, limit: SourceLimit) -> Config {
    let mut config = Config {
        mode: mode as u32,
        sketch_seed: 0x5eed,
        ..Config::DEFAULT
    };
    limit.apply(&mut config);
    config
}

fn limit(rate_pps: u32, burst: u32) -> SourceLimit {
    SourceLimit {
        rate_pps,
        burst,
        prefix_v4: 32,
        prefix_v6: 128,
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Sends `count` SYNs from `src` (each from its own port) back to back; returns how many were
/// answered and how many dropped as over the limit. Anything else fails the test.
fn burst(program: &mut InKernel, src: IpAddr, count: u16) -> (u32, u32) {
    let (mut answered, mut limited) = (0, 0);
    for i in 0..count {
        let outcome = program.run(&syn_from(src, 40000 + i, PORT));
        match (outcome.code, outcome.reasons().as_slice()) {
            (XDP_TX, [Reason::CookieRaw | Reason::CookieStamped | Reason::CookieNoLookup]) => {
                answered += 1
            }
            (XDP_DROP, [Reason::SynSourceLimited]) => limited += 1,
            (code, reasons) => panic!("SYN {i} from {src}: code {code}, {reasons:?}"),
        }
    }
    (answered, limited)
}

#[test]
fn a_source_gets_its_burst_then_its_rate_on_ipv4_and_ipv6() {
    in_lab(PORT, || {
        // 10/s: one SYN per 100 ms, 5 at once. The test's SYNs take well under 100 ms.
        let mut program = InKernel::load(&limited(Mode::Cookie, limit(10, 5)));
        for src in [ip("198.18.0.2"), ip("fd00:198:18::2")] {
            assert_eq!(burst(&mut program, src, 20), (5, 15), "{src}: the burst");
            sleep(Duration::from_millis(110));
            assert_eq!(
                burst(&mut program, src, 5),
                (1, 4),
                "{src}: one interval later"
            );
        }
        // Another source has its own bucket.
        assert_eq!(burst(&mut program, ip("198.18.0.3"), 6), (5, 1));
    });
}

#[test]
fn sources_below_promotion_are_counted_in_the_sketch_and_charged_on_promotion() {
    in_lab(PORT, || {
        // 100/s with a burst of 5: a source earns a bucket at its 5th SYN in the sketch, and
        // that bucket starts charged with all 5, so the burst is still exactly 5.
        let config = limited(Mode::Cookie, limit(100, 5));
        assert_eq!(config.source_promote, 5);
        let mut program = InKernel::load(&config);
        let before = program.stats.read().unwrap().sources_metered;
        assert_eq!(burst(&mut program, ip("198.18.0.9"), 4), (4, 0));
        assert_eq!(
            program.stats.read().unwrap().sources_metered,
            before,
            "no bucket before the 5th SYN"
        );
        assert_eq!(burst(&mut program, ip("198.18.0.9"), 4), (1, 3));
        assert_eq!(program.stats.read().unwrap().sources_metered, before + 1);
    });
}

#[test]
fn sources_are_aggregated_by_prefix() {
    in_lab(PORT, || {
        let mut program = InKernel::load(&limited(
            Mode::Cookie,
            SourceLimit {
                prefix_v4: 24,
                prefix_v6: 64,
                ..limit(10, 4)
            },
        ));
        // Four addresses of one /24 share one bucket of 4.
        let mut answered = 0;
        for host in 1..=4 {
            answered += burst(&mut program, ip(&format!("198.18.7.{host}")), 2).0;
        }
        assert_eq!(answered, 4, "one /24, one bucket");
        assert_eq!(burst(&mut program, ip("198.18.8.1"), 5), (4, 1), "next /24");
        // The same for a /64.
        let mut answered = 0;
        for host in 1..=4 {
            answered += burst(&mut program, ip(&format!("fd00:198:18::{host}")), 2).0;
        }
        assert_eq!(answered, 4, "one /64, one bucket");
        assert_eq!(
            burst(&mut program, ip("fd00:198:18:1::1"), 5),
            (4, 1),
            "next /64"
        );
    });
}

#[test]
fn allowed_sources_bypass_and_monitor_mode_only_counts() {
    in_lab(PORT, || {
        let mut config = limited(Mode::Cookie, limit(10, 2));
        config.flags |= flags::LISTS;
        let mut program = InKernel::load(&config);
        let allowed: Cidr = "198.18.0.2/32".parse().unwrap();
        program
            .lists
            .load(&Lists::new(vec![allowed], vec![]).unwrap())
            .unwrap();
        for port in 0..10 {
            let outcome = program.run(&syn_from(ip("198.18.0.2"), 40000 + port, PORT));
            assert_eq!(
                (outcome.code, outcome.reasons()),
                (XDP_PASS, vec![Reason::ListAllowed])
            );
        }

        program
            .control
            .set_config(&limited(Mode::Monitor, limit(10, 2)))
            .unwrap();
        let mut would_drop = 0;
        for port in 0..5 {
            let outcome = program.run(&syn_from(ip("198.18.0.4"), 40000 + port, PORT));
            assert_eq!(outcome.code, XDP_PASS, "monitor mode changes nothing");
            if outcome.reasons() == vec![Reason::MonitorWouldDrop] {
                would_drop += 1;
            }
        }
        assert_eq!(would_drop, 3, "over the burst of 2");
    });
}

#[test]
fn limits_change_while_running_without_a_reload() {
    in_lab(PORT, || {
        let mut program = InKernel::load(&limited(Mode::Cookie, limit(10, 3)));
        let src = ip("198.18.0.5");
        assert_eq!(burst(&mut program, src, 5), (3, 2));
        // No limit: everything is answered.
        program.control.set_source_limit(&limit(0, 3)).unwrap();
        assert_eq!(burst(&mut program, src, 10), (10, 0));
        // A limit again, tighter in burst, faster in rate: this source's bucket, charged
        // 300 ms ahead, keeps its debt but no more than the new burst (3 ms).
        program.control.set_source_limit(&limit(1000, 3)).unwrap();
        assert_eq!(burst(&mut program, src, 1), (0, 1), "still in debt");
        sleep(Duration::from_millis(5));
        let (answered, _) = burst(&mut program, src, 10);
        assert!(
            (3..=5).contains(&answered),
            "{answered} answered: the burst of 3, and what refilled meanwhile"
        );
        // Caps and auto's threshold go through the same typed layer.
        let config = program.control.set_caps(100, 200).unwrap();
        assert_eq!((config.syn_pass_cap_pps, config.synack_cap_pps), (100, 200));
        let config = program.control.set_auto_threshold(777, 500).unwrap();
        assert_eq!((config.auto_threshold_pps, config.auto_hold_ms), (777, 500));
        assert_eq!(
            program.control.config().unwrap().source_interval_ns,
            1_000_000,
            "earlier changes kept"
        );
    });
}

#[test]
fn random_sources_cost_no_buckets() {
    in_lab(PORT, || {
        // 100/s per source: a source earns a bucket after 6 SYNs within 134-268 ms.
        let mut program = InKernel::load(&limited(Mode::Cookie, limit(100, 100)));
        let before = program.stats.read().unwrap().sources_metered;
        for i in 0..4096u32 {
            let src = IpAddr::from([198, 18, 128 + (i / 256) as u8, (i % 256) as u8]);
            let outcome = program.run(&syn_from(src, 40000, PORT));
            assert_eq!(outcome.code, XDP_TX, "{src}: one SYN is never limited");
        }
        assert_eq!(
            program.stats.read().unwrap().sources_metered - before,
            0,
            "4,096 sources sending one SYN each earned no bucket"
        );
    });
}
