//! The differential run's slice in `cargo xtask test`: generated frames through the XDP program
//! and the reference model in every mode, with a new seed each run (printed, to reproduce with
//! `cargo xtask fuzz --seed S`). The full run is `cargo xtask fuzz`.

use synguard_tests::differential::{self, Variant, check_frame, unhex};

/// At least 50,000 frames; `SYNGUARD_FUZZ_FRAMES` asks for more.
#[test]
fn generated_frames_get_the_models_verdict_in_every_mode() {
    let frames = std::env::var("SYNGUARD_FUZZ_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000u64)
        .max(50_000);
    let seed = std::env::var("SYNGUARD_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(differential::new_seed);
    println!("differential slice: {frames} frames, seed {seed}");
    match differential::run(frames, seed, &mut std::io::stdout()) {
        Ok(summary) => {
            summary.print(&mut std::io::stdout());
            assert!(summary.total() >= frames, "every frame ran");
            assert!(
                summary.synacks_checked > 0,
                "some SYNs were answered and checked"
            );
            assert!(
                summary.without_lookup > 0,
                "some were answered on the fast path, and checked as the others"
            );
        }
        Err(mismatch) => panic!("{mismatch}"),
    }
}

/// Frames on which the program and the model once disagreed, found by the differential run.
#[test]
fn frames_the_differential_run_found_stay_fixed() {
    let cases = [
        // IHL 15 and forty NOPs: the option walk ran out of steps one short of the end and
        // dropped the SYN as carrying options it cannot answer.
        (
            "a SYN behind 40 bytes of IPv4 NOPs",
            "0200c61200010200c612000208004f0000641234400040067e24c6120002c61200010101010101010101\
             0101010101010101010101010101010101010101010101010101010101010101010101040000500000\
             000000000000a0020000b77f0000020405b40402080a000000090000000001030307",
        ),
        // Found while the run was being built: a wildcard listener made the program answer
        // SYNs to any address (synack.rs has the full set of destinations).
        (
            "a SYN to a neighbour's address",
            "0200c61200010200c612000208004500002c1234400040069c0ec6120002c61200639c400050000000\
             07000000006002faf074140000020405b4",
        ),
    ];
    for variant in [Variant::Monitor, Variant::Cookie, Variant::AutoAbove] {
        for (what, frame) in cases {
            let frame = unhex(&frame.replace(char::is_whitespace, ""));
            if let Err(why) = check_frame(variant, &frame) {
                panic!("{what}, {}: {why}", variant.name());
            }
        }
    }
}
