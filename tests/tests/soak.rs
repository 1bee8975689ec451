//! The soak's slice in `cargo xtask test`: 90 s of floods, legit requests and every kind of
//! run-time change (`synguard_lab::soak`); the long one is `cargo xtask soak`.

use std::time::Duration;

#[test]
fn ninety_seconds_of_floods_and_changes_break_nothing() {
    let report = synguard_lab::soak::run(
        Duration::from_secs(90),
        // Closer than the long soak's 10 to 30 s, so that every kind of change fits.
        Duration::from_secs(8),
        Duration::from_secs(10),
    )
    .unwrap();
    report.print();
    assert!(
        report.changes.len() >= synguard_lab::soak::Change::ALL.len(),
        "every kind of change ran: {:?}",
        report.changes
    );
    report.check().unwrap();
}
