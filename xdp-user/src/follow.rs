//! `auto` mode's controller side. The data path decides when an attack starts and ends and
//! says so through its events ring; the controller follows with tcp_syncookies (2 during an
//! attack, for the stamping cookie helper; the operator's value otherwise), samples the
//! attack's sources, logs start and end with the rates and the top sources, and keeps a
//! relative threshold in step with the learned baseline.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use synguard_common::{AttackEvent, config::event};
use tracing::{info, warn};

use crate::{
    attack::{AttackEvents, format_top},
    baseline::{Baseline, Threshold},
    events::{Event, Events},
    loader::Attachment,
    maps::{AutoSummary, monotonic_ns},
    sysctl::SysctlClaim,
};

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
}

pub struct AutoFollower {
    /// Whether `auto` mode is in force: outside it, the follower does nothing.
    active: bool,
    counters: Arc<Events>,
    events: AttackEvents,
    threshold: Threshold,
    threshold_min: u32,
    baseline: Baseline,
    /// Set while an attack is going on.
    attack: Option<Attack>,
    started_at: Instant,
}

impl AutoFollower {
    pub fn new(
        active: bool,
        counters: Arc<Events>,
        events: AttackEvents,
        threshold: Threshold,
        threshold_min: u32,
        baseline_time_constant: Duration,
    ) -> AutoFollower {
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
    pub fn set_active(&mut self, active: bool, attachment: &Attachment, sysctls: &SysctlClaim) {
        if active == self.active {
            return;
        }
        self.active = active;
        self.attack = None;
        if active {
            self.resume(attachment, sysctls);
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
    pub fn resume(&mut self, attachment: &Attachment, sysctls: &SysctlClaim) {
        if !self.active {
            return;
        }
        let Some(summary) = summary(attachment).filter(|s| s.under_attack) else {
            return;
        };
        self.attack = Some(Attack {
            started_ns: monotonic_ns(),
            last: Some((Instant::now(), summary.syns)),
            peak_pps: 0,
            syns_at_start: Some(summary.syns),
        });
        if let Err(e) = self.events.reset() {
            warn!(error = %e, "reading the sampled sources failed");
        }
        self.counters.record(Event::AttackStarted);
        info!(
            syn_rate = summary.syn_rate_pps,
            "SYN flood in progress at takeover: answering with cookies"
        );
        set_syncookies(sysctls, true);
    }

    /// The most sampled sources of the attack going on, if one is.
    pub fn top_sources(
        &mut self,
        n: usize,
        config: &synguard_common::Config,
    ) -> Vec<(String, f64)> {
        if self.attack.is_none() {
            return Vec::new();
        }
        let _ = self.events.collect();
        self.events.top_sources(n, config)
    }

    pub fn events(&mut self) -> &mut AttackEvents {
        &mut self.events
    }

    pub fn attacked(&self) -> bool {
        self.attack.is_some()
    }

    /// Acts on what the data path reported.
    pub fn on_events(
        &mut self,
        events: &[AttackEvent],
        attachment: &Attachment,
        sysctls: &SysctlClaim,
    ) {
        if !self.active {
            return;
        }
        for event in events {
            match event.kind {
                event::START if self.attack.is_none() => {
                    let syns = summary(attachment).map(|s| s.syns);
                    self.attack = Some(Attack {
                        started_ns: event.started_ns,
                        last: syns.map(|syns| (Instant::now(), syns)),
                        peak_pps: 0,
                        syns_at_start: syns,
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
                    set_syncookies(sysctls, true);
                }
                event::STOP if self.attack.is_some() => {
                    let why = "rate below half the threshold for the hold time";
                    self.end(attachment, sysctls, event.peak_pps, event.at_ns, why);
                }
                _ => {}
            }
        }
    }

    /// Every few hundred ms during an attack: counts the sampled sources, and ends an attack
    /// the data path cannot end because no packet arrives any more.
    pub fn on_sample_tick(&mut self, attachment: &Attachment, sysctls: &SysctlClaim) {
        if let Err(e) = self.events.collect() {
            warn!(error = %e, "reading the sampled sources failed");
        }
        let summary = summary(attachment);
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
                attachment,
                sysctls,
                summary.peak_pps,
                monotonic_ns(),
                "no SYN since the hold time",
            ),
            _ => {}
        }
    }

    /// Every second: learns the baseline and moves a relative threshold with it.
    pub fn on_baseline_tick(&mut self, attachment: &Attachment) {
        let (true, Threshold::Relative(factor)) = (self.active, self.threshold) else {
            return;
        };
        let Some(summary) = summary(attachment) else {
            return;
        };
        self.baseline.observe(
            self.started_at.elapsed(),
            summary.syns,
            summary.under_attack || self.attack.is_some(),
        );
        let wanted = self.baseline.threshold(factor, self.threshold_min);
        let control = attachment.control();
        let mut control = control.lock().unwrap_or_else(|e| e.into_inner());
        let result = control.update_config(|config| {
            let current = f64::from(config.auto_threshold_pps.max(1));
            if (f64::from(wanted) - current).abs() / current >= THRESHOLD_STEP {
                config.auto_threshold_pps = wanted;
            }
        });
        if let Err(e) = result {
            warn!(error = %e, "updating the threshold failed");
        }
    }

    fn end(
        &mut self,
        attachment: &Attachment,
        sysctls: &SysctlClaim,
        peak_pps: u64,
        at_ns: u64,
        why: &str,
    ) {
        let Some(attack) = self.attack.take() else {
            return;
        };
        if let Err(e) = self.events.collect() {
            warn!(error = %e, "reading the sampled sources failed");
        }
        let config = attachment
            .control()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .config();
        let top = match config {
            Ok(config) => format_top(&self.events.top_sources(TOP_SOURCES, &config)),
            Err(_) => "unknown".into(),
        };
        let seconds = at_ns.saturating_sub(attack.started_ns) as f64 / 1e9;
        let syns = match (attack.syns_at_start, summary(attachment)) {
            (Some(start), Some(now)) => now.syns.saturating_sub(start),
            _ => 0,
        };
        self.counters.record(Event::AttackEnded);
        info!(
            syns,
            mean_syn_rate = (syns as f64 / seconds.max(0.001)) as u64,
            peak_syn_rate = attack.peak_pps,
            peak_syn_rate_10ms = peak_pps,
            duration_s = %format!("{seconds:.1}"),
            sampled = self.events.sampled(),
            top_sources = %top,
            why,
            "SYN flood over: passing SYNs to the kernel"
        );
        set_syncookies(sysctls, false);
    }
}

fn summary(attachment: &Attachment) -> Option<AutoSummary> {
    let control = attachment.control();
    let control = control.lock().unwrap_or_else(|e| e.into_inner());
    match control.auto_summary() {
        Ok(summary) => Some(summary),
        Err(e) => {
            warn!(error = %e, "reading auto mode's state failed");
            None
        }
    }
}

fn set_syncookies(sysctls: &SysctlClaim, attacked: bool) {
    if let Err(e) = sysctls.cookies(attacked) {
        warn!(error = %e, "following auto mode with tcp_syncookies failed");
    }
}
