//! What happened to a running synguard, counted for Prometheus: attacks (and the time spent
//! under them), mode and configuration changes, refused reloads. Written by the main loop,
//! read by the metrics collector.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use crate::sync::lock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    AttackStarted,
    AttackEnded,
    ModeChanged,
    ConfigChanged,
    ConfigRefused,
}

impl Event {
    pub const ALL: [Event; 5] = [
        Event::AttackStarted,
        Event::AttackEnded,
        Event::ModeChanged,
        Event::ConfigChanged,
        Event::ConfigRefused,
    ];

    /// The label value in `synguard_events_total`.
    pub const fn name(self) -> &'static str {
        match self {
            Event::AttackStarted => "attack_started",
            Event::AttackEnded => "attack_ended",
            Event::ModeChanged => "mode_changed",
            Event::ConfigChanged => "config_changed",
            Event::ConfigRefused => "config_refused",
        }
    }
}

#[derive(Default)]
pub struct Events {
    counts: [AtomicU64; Event::ALL.len()],
    /// Time under the attacks that ended, in ns.
    attacked_ns: AtomicU64,
    /// When the attack going on started.
    attack_since: Mutex<Option<Instant>>,
}

impl Events {
    pub fn record(&self, event: Event) {
        self.counts[event as usize].fetch_add(1, Ordering::Relaxed);
        let mut since = lock(&self.attack_since);
        match event {
            Event::AttackStarted => *since = Some(Instant::now()),
            Event::AttackEnded => {
                if let Some(start) = since.take() {
                    let ns = start.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
                    self.attacked_ns.fetch_add(ns, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }

    pub fn count(&self, event: Event) -> u64 {
        self.counts[event as usize].load(Ordering::Relaxed)
    }

    /// Seconds spent under attack, the one going on included.
    pub fn seconds_under_attack(&self) -> f64 {
        let ongoing = lock(&self.attack_since).map_or(0.0, |start| start.elapsed().as_secs_f64());
        self.attacked_ns.load(Ordering::Relaxed) as f64 / 1e9 + ongoing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attacks_are_counted_and_timed() {
        let events = Events::default();
        assert_eq!(events.seconds_under_attack(), 0.0);
        events.record(Event::AttackStarted);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(
            events.seconds_under_attack() >= 0.02,
            "the ongoing attack counts"
        );
        events.record(Event::AttackEnded);
        let after = events.seconds_under_attack();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(events.seconds_under_attack(), after, "not after it ended");
        assert_eq!(events.count(Event::AttackStarted), 1);
        assert_eq!(events.count(Event::ConfigChanged), 0);
    }
}
