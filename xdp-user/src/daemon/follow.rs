//! `auto` mode's controller side. The data path decides when an attack starts and ends and
//! says so through its events ring; the controller follows with tcp_syncookies (2 during an
//! attack, for the stamping cookie helper; the operator's value otherwise), samples the
//! attack's sources, logs start and end with the rates and the top sources, and keeps a
//! relative threshold in step with the learned baseline.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use synguard_common::{AttackEvent, Config, config::event};
use tracing::{info, warn};

use crate::{
    Error,
    config::threshold::Threshold,
    daemon::baseline::Baseline,
    datapath::{
        attack::{AttackEvents, format_top},
        handshakes::PortHandshakes,
        loader::Attachment,
        maps::{AutoSummary, monotonic_ns},
    },
    host::sysctl::SysctlClaim,
    sync::lock,
    telemetry::events::{Event, Events},
};

/// What the follower reads of the data path and changes on the host. The live one is the
/// attachment with this interface's sysctl claim ([`Live`]); unit tests use a fake.
pub trait Plant {
    fn auto_summary(&self) -> Result<AutoSummary, Error>;
    fn config(&self) -> Result<Config, Error>;
    fn update_config(&self, change: &mut dyn FnMut(&mut Config)) -> Result<(), Error>;
    /// tcp_syncookies=2 while `attacked`, the operator's value otherwise.
    fn follow_attack(&self, attacked: bool) -> Result<(), Error>;
    /// The handshake counters per port.
    fn handshakes(&self) -> Result<Vec<PortHandshakes>, Error>;
}

/// The attack's sampled sources ([`AttackEvents`] in the live program).
pub trait Samples {
    /// Forgets what was sampled before now.
    fn reset(&mut self) -> Result<(), Error>;
    /// Counts what was sampled since the last call.
    fn collect(&mut self) -> Result<(), Error>;
    fn top_sources(&self, n: usize, config: &Config) -> Vec<(String, f64)>;
    fn sampled(&self) -> u64;
}

/// The live plant: the attached program and the sysctls it claims.
pub struct Live<'a> {
    pub attachment: &'a Attachment,
    pub sysctls: &'a SysctlClaim,
}

impl Plant for Live<'_> {
    fn auto_summary(&self) -> Result<AutoSummary, Error> {
        lock(&self.attachment.control()).auto_summary()
    }

    fn config(&self) -> Result<Config, Error> {
        lock(&self.attachment.control()).config()
    }

    fn update_config(&self, change: &mut dyn FnMut(&mut Config)) -> Result<(), Error> {
        lock(&self.attachment.control())
            .update_config(|config| change(config))
            .map(|_| ())
    }

    fn follow_attack(&self, attacked: bool) -> Result<(), Error> {
        self.sysctls.cookies(attacked)
    }

    fn handshakes(&self) -> Result<Vec<PortHandshakes>, Error> {
        lock(&self.attachment.handshakes()).read()
    }
}

impl Samples for AttackEvents {
    fn reset(&mut self) -> Result<(), Error> {
        AttackEvents::reset(self)
    }

    fn collect(&mut self) -> Result<(), Error> {
        AttackEvents::collect(self)
    }

    fn top_sources(&self, n: usize, config: &Config) -> Vec<(String, f64)> {
        AttackEvents::top_sources(self, n, config)
    }

    fn sampled(&self) -> u64 {
        AttackEvents::sampled(self)
    }
}

/// Sources named in the log at the end of an attack.
const TOP_SOURCES: usize = 5;
/// The shortest span the controller measures a peak rate over.
const PEAK_SPAN: Duration = Duration::from_millis(50);
/// Below this change the threshold in the data path is left as it is.
const THRESHOLD_STEP: f64 = 0.02;

/// What the controller measures of an attack going on.
struct Attack {
    /// When it started, in ns of CLOCK_MONOTONIC.
    started_ns: u64,
    /// The SYN counter at the last sample tick, and when it was read.
    last: Option<(Instant, u64)>,
    /// The highest SYN rate between two sample ticks (about 100 ms).
    peak_pps: u64,
    /// The SYN counter when it started.
    syns_at_start: Option<u64>,
    /// The handshake counters when it started.
    handshakes_at_start: Vec<PortHandshakes>,
}

pub struct AutoFollower<S = AttackEvents> {
    /// Whether `auto` mode is in force: outside it, the follower does nothing.
    active: bool,
    counters: Arc<Events>,
    events: S,
    threshold: Threshold,
    threshold_min: u32,
    baseline: Baseline,
    /// Set while an attack is going on.
    attack: Option<Attack>,
    started_at: Instant,
}

impl<S: Samples> AutoFollower<S> {
    pub fn new(
        active: bool,
        counters: Arc<Events>,
        events: S,
        threshold: Threshold,
        threshold_min: u32,
        baseline_time_constant: Duration,
    ) -> AutoFollower<S> {
        AutoFollower {
            active,
            counters,
            events,
            threshold,
            threshold_min,
            baseline: Baseline::new(baseline_time_constant),
            attack: None,
            started_at: Instant::now(),
        }
    }

    /// Follows `auto` mode from now on, or stops following it (the mode changed at run time).
    pub fn set_active(&mut self, active: bool, plant: &dyn Plant) {
        if active == self.active {
            return;
        }
        self.active = active;
        self.attack = None;
        if active {
            self.resume(plant);
        }
    }

    /// Takes new thresholds (set at run time).
    pub fn retarget(&mut self, threshold: Threshold, threshold_min: u32) {
        self.threshold = threshold;
        self.threshold_min = threshold_min;
    }

    /// The learned SYN rate, for a relative threshold.
    pub fn baseline(&self) -> Option<f64> {
        self.baseline.rate()
    }

    /// After taking over a program a killed controller left, or when `auto` is switched on: if
    /// the data path is answering a flood, follow that flood from here (sysctl, sampling, the
    /// end in the log).
    pub fn resume(&mut self, plant: &dyn Plant) {
        if !self.active {
            return;
        }
        let Some(summary) = summary(plant).filter(|s| s.under_attack) else {
            return;
        };
        self.attack = Some(Attack {
            started_ns: monotonic_ns(),
            last: Some((Instant::now(), summary.syns)),
            peak_pps: 0,
            syns_at_start: Some(summary.syns),
            handshakes_at_start: handshakes(plant),
        });
        if let Err(e) = self.events.reset() {
            warn!(error = %e, "reading the sampled sources failed");
        }
        self.counters.record(Event::AttackStarted);
        info!(
            syn_rate = summary.syn_rate_pps,
            "SYN flood in progress at takeover: answering with cookies"
        );
        follow_attack(plant, true);
    }

    /// The most sampled sources of the attack going on, if one is.
    pub fn top_sources(&mut self, n: usize, config: &Config) -> Vec<(String, f64)> {
        if self.attack.is_none() {
            return Vec::new();
        }
        let _ = self.events.collect();
        self.events.top_sources(n, config)
    }

    pub fn events(&mut self) -> &mut S {
        &mut self.events
    }

    pub fn attacked(&self) -> bool {
        self.attack.is_some()
    }

    /// Acts on what the data path reported.
    pub fn on_events(&mut self, events: &[AttackEvent], plant: &dyn Plant) {
        if !self.active {
            return;
        }
        for event in events {
            match event.kind {
                event::START if self.attack.is_none() => {
                    let syns = summary(plant).map(|s| s.syns);
                    self.attack = Some(Attack {
                        started_ns: event.started_ns,
                        last: syns.map(|syns| (Instant::now(), syns)),
                        peak_pps: 0,
                        syns_at_start: syns,
                        handshakes_at_start: handshakes(plant),
                    });
                    if let Err(e) = self.events.reset() {
                        warn!(error = %e, "reading the sampled sources failed");
                    }
                    self.counters.record(Event::AttackStarted);
                    match event.port {
                        0 => info!(
                            syn_rate = event.rate_pps,
                            threshold = event.threshold_pps,
                            "SYN flood: answering with cookies"
                        ),
                        port => info!(
                            port,
                            port_syn_rate = event.rate_pps,
                            port_threshold = event.threshold_pps,
                            "SYN flood: answering with cookies"
                        ),
                    }
                    follow_attack(plant, true);
                }
                event::STOP if self.attack.is_some() => {
                    let why = "rate below half the threshold for the hold time";
                    self.end(plant, event.peak_pps, event.at_ns, why);
                }
                _ => {}
            }
        }
    }

    /// Every few hundred ms during an attack: counts the sampled sources, and ends an attack
    /// the data path cannot end because no packet arrives any more.
    pub fn on_sample_tick(&mut self, plant: &dyn Plant) {
        if let Err(e) = self.events.collect() {
            warn!(error = %e, "reading the sampled sources failed");
        }
        let summary = summary(plant);
        if let (Some(attack), Some(summary)) = (self.attack.as_mut(), summary) {
            // Rates over at least 50 ms: ticks that come late come in a bunch.
            let now = Instant::now();
            match attack.last {
                Some((then, syns)) if now.duration_since(then) >= PEAK_SPAN => {
                    let elapsed = now.duration_since(then).as_secs_f64();
                    let rate = summary.syns.saturating_sub(syns) as f64 / elapsed;
                    attack.peak_pps = attack.peak_pps.max(rate as u64);
                    attack.last = Some((now, summary.syns));
                }
                Some(_) => {}
                None => attack.last = Some((now, summary.syns)),
            }
        }
        match summary {
            Some(summary) if !summary.under_attack => self.end(
                plant,
                summary.peak_pps,
                monotonic_ns(),
                "no SYN since the hold time",
            ),
            _ => {}
        }
    }

    /// Every second: learns the baseline and moves a relative threshold with it.
    pub fn on_baseline_tick(&mut self, plant: &dyn Plant) {
        let (true, Threshold::Relative(factor)) = (self.active, self.threshold) else {
            return;
        };
        let Some(summary) = summary(plant) else {
            return;
        };
        self.baseline.observe(
            self.started_at.elapsed(),
            summary.syns,
            summary.under_attack || self.attack.is_some(),
        );
        let wanted = self.baseline.threshold(factor, self.threshold_min);
        let result = plant.update_config(&mut |config| {
            let current = f64::from(config.auto_threshold_pps.max(1));
            if (f64::from(wanted) - current).abs() / current >= THRESHOLD_STEP {
                config.auto_threshold_pps = wanted;
            }
        });
        if let Err(e) = result {
            warn!(error = %e, "updating the threshold failed");
        }
    }

    fn end(&mut self, plant: &dyn Plant, peak_pps: u64, at_ns: u64, why: &str) {
        let Some(attack) = self.attack.take() else {
            return;
        };
        if let Err(e) = self.events.collect() {
            warn!(error = %e, "reading the sampled sources failed");
        }
        let config = plant.config();
        let top = match config {
            Ok(config) => format_top(&self.events.top_sources(TOP_SOURCES, &config)),
            Err(_) => "unknown".into(),
        };
        let seconds = at_ns.saturating_sub(attack.started_ns) as f64 / 1e9;
        let syns = match (attack.syns_at_start, summary(plant)) {
            (Some(start), Some(now)) => now.syns.saturating_sub(start),
            _ => 0,
        };
        let completion = Completion::between(&attack.handshakes_at_start, &handshakes(plant));
        self.counters.record(Event::AttackEnded);
        info!(
            syns,
            synacks_sent = completion.answered,
            handshakes_completed = completion.completed,
            completion = %completion.ratio(),
            completion_by_port = %completion.by_port(),
            mean_syn_rate = (syns as f64 / seconds.max(0.001)) as u64,
            peak_syn_rate = attack.peak_pps,
            peak_syn_rate_10ms = peak_pps,
            duration_s = %format!("{seconds:.1}"),
            sampled = self.events.sampled(),
            top_sources = %top,
            why,
            "SYN flood over: passing SYNs to the kernel"
        );
        follow_attack(plant, false);
    }
}

fn handshakes(plant: &dyn Plant) -> Vec<PortHandshakes> {
    plant.handshakes().unwrap_or_else(|e| {
        warn!(error = %e, "reading the handshake counters failed");
        Vec::new()
    })
}

/// The handshakes of an attack: SYN-ACKs sent and cookies completed between two readings, in
/// all and per port. A spoofed flood completes almost none; real clients almost all.
struct Completion {
    answered: u64,
    completed: u64,
    /// Per label, the busiest first.
    ports: Vec<(String, u64, u64)>,
}

/// Ports named in the log's completion by port.
const COMPLETION_PORTS: usize = 5;

impl Completion {
    fn between(start: &[PortHandshakes], now: &[PortHandshakes]) -> Completion {
        let mut ports: Vec<(String, u64, u64)> = now
            .iter()
            .map(|row| {
                let before = start.iter().find(|s| s.port == row.port);
                let (a, c) = before.map_or((0, 0), |s| (s.answered, s.completed));
                (
                    row.label(),
                    row.answered.saturating_sub(a),
                    row.completed.saturating_sub(c),
                )
            })
            .filter(|(_, answered, completed)| answered + completed > 0)
            .collect();
        ports.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Completion {
            answered: ports.iter().map(|p| p.1).sum(),
            completed: ports.iter().map(|p| p.2).sum(),
            ports,
        }
    }

    fn ratio(&self) -> String {
        percent(self.completed, self.answered)
    }

    fn by_port(&self) -> String {
        let shown: Vec<String> = self
            .ports
            .iter()
            .take(COMPLETION_PORTS)
            .map(|(port, answered, completed)| {
                format!(
                    "{port}: {} ({completed}/{answered})",
                    percent(*completed, *answered)
                )
            })
            .collect();
        match shown.is_empty() {
            true => "none".into(),
            false => shown.join(", "),
        }
    }
}

/// `part` of `whole` as a percentage with one decimal, or "n/a" for none.
pub fn percent(part: u64, whole: u64) -> String {
    match whole {
        0 => "n/a".into(),
        _ => format!("{:.1}%", part as f64 * 100.0 / whole as f64),
    }
}

fn summary(plant: &dyn Plant) -> Option<AutoSummary> {
    match plant.auto_summary() {
        Ok(summary) => Some(summary),
        Err(e) => {
            warn!(error = %e, "reading auto mode's state failed");
            None
        }
    }
}

fn follow_attack(plant: &dyn Plant, attacked: bool) {
    if let Err(e) = plant.follow_attack(attacked) {
        warn!(error = %e, "following auto mode with tcp_syncookies failed");
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;

    /// The data path and host as the follower sees them, with what it did to them.
    struct Fake {
        summary: Cell<AutoSummary>,
        config: RefCell<Config>,
        /// Every tcp_syncookies change the follower asked for: true for "attacked".
        syncookies: RefCell<Vec<bool>>,
    }

    impl Fake {
        fn new() -> Fake {
            Fake {
                summary: Cell::new(AutoSummary {
                    under_attack: false,
                    syn_rate_pps: 0,
                    peak_pps: 0,
                    syns: 0,
                }),
                config: RefCell::new(Config {
                    auto_threshold_pps: 1_000,
                    ..Config::DEFAULT
                }),
                syncookies: RefCell::new(Vec::new()),
            }
        }

        fn data_path(&self, under_attack: bool, syns: u64) {
            let mut summary = self.summary.get();
            summary.under_attack = under_attack;
            summary.syns = syns;
            self.summary.set(summary);
        }
    }

    impl Plant for Fake {
        fn auto_summary(&self) -> Result<AutoSummary, Error> {
            Ok(self.summary.get())
        }

        fn config(&self) -> Result<Config, Error> {
            Ok(*self.config.borrow())
        }

        fn update_config(&self, change: &mut dyn FnMut(&mut Config)) -> Result<(), Error> {
            change(&mut self.config.borrow_mut());
            Ok(())
        }

        fn follow_attack(&self, attacked: bool) -> Result<(), Error> {
            self.syncookies.borrow_mut().push(attacked);
            Ok(())
        }

        fn handshakes(&self) -> Result<Vec<PortHandshakes>, Error> {
            Ok(Vec::new())
        }
    }

    #[derive(Default)]
    struct NoSamples {
        resets: u32,
    }

    impl Samples for NoSamples {
        fn reset(&mut self) -> Result<(), Error> {
            self.resets += 1;
            Ok(())
        }

        fn collect(&mut self) -> Result<(), Error> {
            Ok(())
        }

        fn top_sources(&self, _n: usize, _config: &Config) -> Vec<(String, f64)> {
            vec![("198.18.128.1".into(), 1.0)]
        }

        fn sampled(&self) -> u64 {
            1
        }
    }

    fn follower(active: bool, threshold: Threshold) -> (AutoFollower<NoSamples>, Arc<Events>) {
        let counters = Arc::new(Events::default());
        let follower = AutoFollower::new(
            active,
            counters.clone(),
            NoSamples::default(),
            threshold,
            1_000,
            Duration::from_secs(10),
        );
        (follower, counters)
    }

    fn event(kind: u32) -> AttackEvent {
        AttackEvent {
            kind,
            threshold_pps: 1_000,
            port: 0,
            reserved: 0,
            at_ns: monotonic_ns(),
            rate_pps: 5_000,
            peak_pps: 6_000,
            started_ns: monotonic_ns(),
        }
    }

    #[test]
    fn an_attack_starts_and_ends_with_the_data_paths_events() {
        let plant = Fake::new();
        let (mut follower, counters) = follower(true, Threshold::Absolute(1_000));
        plant.data_path(true, 100);
        follower.on_events(&[event(event::START)], &plant);
        assert!(follower.attacked());
        assert_eq!(follower.events().resets, 1);
        assert_eq!(counters.count(Event::AttackStarted), 1);
        // A second start while one goes on changes nothing.
        follower.on_events(&[event(event::START)], &plant);
        assert_eq!(counters.count(Event::AttackStarted), 1);
        assert_eq!(follower.top_sources(5, &Config::DEFAULT).len(), 1);

        plant.data_path(false, 5_000);
        follower.on_events(&[event(event::STOP)], &plant);
        assert!(!follower.attacked());
        assert_eq!(counters.count(Event::AttackEnded), 1);
        assert_eq!(*plant.syncookies.borrow(), [true, false]);
        assert!(follower.top_sources(5, &Config::DEFAULT).is_empty());
        // A stop without an attack is ignored.
        follower.on_events(&[event(event::STOP)], &plant);
        assert_eq!(counters.count(Event::AttackEnded), 1);
    }

    #[test]
    fn an_attack_the_data_path_no_longer_sees_ends_on_the_sample_tick() {
        let plant = Fake::new();
        let (mut follower, counters) = follower(true, Threshold::Absolute(1_000));
        plant.data_path(true, 0);
        follower.on_events(&[event(event::START)], &plant);
        plant.data_path(true, 10_000);
        follower.on_sample_tick(&plant);
        assert!(follower.attacked(), "the data path still answers");
        // The flood stopped dead: no packet came to end it in the data path.
        plant.data_path(false, 10_000);
        follower.on_sample_tick(&plant);
        assert!(!follower.attacked());
        assert_eq!(counters.count(Event::AttackEnded), 1);
        assert_eq!(*plant.syncookies.borrow(), [true, false]);
    }

    #[test]
    fn outside_auto_mode_the_follower_does_nothing_and_takes_up_a_flood_when_switched_on() {
        let plant = Fake::new();
        let (mut follower, counters) = follower(false, Threshold::Absolute(1_000));
        plant.data_path(true, 0);
        follower.on_events(&[event(event::START)], &plant);
        follower.resume(&plant);
        assert!(!follower.attacked());
        assert!(plant.syncookies.borrow().is_empty());
        // Switched on during a flood: followed from there.
        follower.set_active(true, &plant);
        assert!(follower.attacked());
        assert_eq!(*plant.syncookies.borrow(), [true]);
        assert_eq!(counters.count(Event::AttackStarted), 1);
        // Switched off: the attack is no longer followed; switching on again when calm does
        // not start one.
        follower.set_active(false, &plant);
        assert!(!follower.attacked());
        plant.data_path(false, 0);
        follower.set_active(true, &plant);
        assert!(!follower.attacked());
    }

    #[test]
    fn a_relative_threshold_follows_the_baseline_and_an_absolute_one_stays() {
        let plant = Fake::new();
        let (mut absolute, _) = follower(true, Threshold::Absolute(1_000));
        let (mut relative, _) = follower(true, Threshold::Relative(8.0));
        // Steady traffic: baseline ticks learn its rate (counter grows by 2,000 a tick; the
        // baseline's clock is the follower's own, so the rate it sees depends on real time:
        // all that is asserted is that the threshold moves off its start, and not below the
        // minimum).
        for tick in 1..=5u64 {
            plant.data_path(false, tick * 2_000);
            absolute.on_baseline_tick(&plant);
        }
        assert_eq!(plant.config.borrow().auto_threshold_pps, 1_000);
        for tick in 6..=10u64 {
            std::thread::sleep(Duration::from_millis(20));
            plant.data_path(false, tick * 200_000);
            relative.on_baseline_tick(&plant);
        }
        let moved = plant.config.borrow().auto_threshold_pps;
        assert!(relative.baseline().is_some());
        assert!(moved > 1_000, "threshold stayed at {moved}");
    }

    #[test]
    fn an_attacks_completion_is_the_change_of_each_port_busiest_first() {
        let row = |port, answered, completed| PortHandshakes {
            port,
            answered,
            completed,
        };
        let start = [row(None, 10, 10), row(Some(80), 100, 90)];
        let now = [
            row(None, 10, 10),
            row(Some(80), 30_100, 120),
            row(Some(443), 50, 49),
        ];
        let c = Completion::between(&start, &now);
        assert_eq!((c.answered, c.completed), (30_050, 79));
        assert_eq!(c.ratio(), "0.3%");
        assert_eq!(c.by_port(), "80: 0.1% (30/30000), 443: 98.0% (49/50)");
        let none = Completion::between(&now, &now);
        assert_eq!(
            (none.ratio(), none.by_port()),
            ("n/a".into(), "none".into())
        );
    }
}
