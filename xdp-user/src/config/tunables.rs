//! The tunables: what an operator may change while synguard runs, whichever way the change
//! comes (flags and environment at start, the config file, `synguard set`, SIGHUP). Every one
//! of those produces a [`Tunables`] (or a [`TunablesChange`] to one); the daemon compares and
//! applies that, and nothing else.
//!
//! The command line checks values with clap's parsers as it reads them; values that arrive
//! over the control socket are checked again here ([`Tunables::check`]), since any client may
//! send them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use synguard_common::Mode;

use super::{lists::Cidr, ports::PortSet, settings::SourceLimit, text, threshold::Threshold};

/// The run-time tunables, with the names of the flags that set them (in snake case).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tunables {
    #[serde(with = "text::mode")]
    pub mode: Mode,
    /// `None`: every port with a listener.
    #[serde(with = "text::option")]
    pub ports: Option<PortSet>,
    #[serde(with = "text::display")]
    pub auto_threshold: Threshold,
    pub auto_threshold_min: u32,
    pub auto_baseline_secs: u64,
    pub auto_port_threshold: u32,
    pub auto_hold_ms: u32,
    pub max_syn_pass_rate: u32,
    pub max_synack_rate: u32,
    pub syn_rate_per_source: u32,
    /// `None`: one second's worth of `syn_rate_per_source`.
    pub syn_burst_per_source: Option<u32>,
    pub source_prefix_v4: u32,
    pub source_prefix_v6: u32,
}

/// A change to some of the tunables (`synguard set`): the fields given, typed. `ports` cannot
/// go back to "every port with a listener" at run time; that takes a reload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunablesChange {
    #[serde(
        default,
        with = "text::option_mode",
        skip_serializing_if = "Option::is_none"
    )]
    pub mode: Option<Mode>,
    #[serde(
        default,
        with = "text::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub ports: Option<PortSet>,
    #[serde(
        default,
        with = "text::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub auto_threshold: Option<Threshold>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_threshold_min: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_baseline_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_port_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_hold_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_syn_pass_rate: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_synack_rate: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_rate_per_source: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_burst_per_source: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_prefix_v4: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_prefix_v6: Option<u32>,
}

impl TunablesChange {
    pub fn is_empty(&self) -> bool {
        *self == TunablesChange::default()
    }
}

impl Tunables {
    /// These tunables with `change` applied, checked; `self` is left as it was.
    pub fn changed(&self, change: &TunablesChange) -> Result<Tunables, String> {
        let mut next = self.clone();
        let c = change.clone();
        if let Some(value) = c.mode {
            next.mode = value;
        }
        if let Some(value) = c.auto_threshold {
            next.auto_threshold = value;
        }
        if let Some(value) = c.auto_threshold_min {
            next.auto_threshold_min = value;
        }
        if let Some(value) = c.auto_baseline_secs {
            next.auto_baseline_secs = value;
        }
        if let Some(value) = c.auto_port_threshold {
            next.auto_port_threshold = value;
        }
        if let Some(value) = c.auto_hold_ms {
            next.auto_hold_ms = value;
        }
        if let Some(value) = c.max_syn_pass_rate {
            next.max_syn_pass_rate = value;
        }
        if let Some(value) = c.max_synack_rate {
            next.max_synack_rate = value;
        }
        if let Some(value) = c.syn_rate_per_source {
            next.syn_rate_per_source = value;
        }
        if let Some(value) = c.source_prefix_v4 {
            next.source_prefix_v4 = value;
        }
        if let Some(value) = c.source_prefix_v6 {
            next.source_prefix_v6 = value;
        }
        if c.ports.is_some() {
            next.ports = c.ports;
        }
        if c.syn_burst_per_source.is_some() {
            next.syn_burst_per_source = c.syn_burst_per_source;
        }
        next.check()?;
        Ok(next)
    }

    /// The ranges the command line's parsers enforce, for values that came another way.
    pub fn check(&self) -> Result<(), String> {
        let range = |key: &str, value: u64, low: u64, high: u64| match (low..=high).contains(&value)
        {
            true => Ok(()),
            false => Err(format!("{key}: {value} is not in {low}..={high}")),
        };
        range("source-prefix-v4", self.source_prefix_v4.into(), 1, 32)?;
        range("source-prefix-v6", self.source_prefix_v6.into(), 1, 128)?;
        range("auto-baseline-secs", self.auto_baseline_secs, 1, u64::MAX)?;
        if let Some(burst) = self.syn_burst_per_source {
            range("syn-burst-per-source", burst.into(), 1, u32::MAX.into())?;
        }
        if self.ports.as_ref().is_some_and(PortSet::is_empty) {
            return Err("ports: the set is empty".into());
        }
        // A threshold that arrived as text was checked by its parser; one built in code is
        // held to the same rule.
        self.auto_threshold
            .to_string()
            .parse::<Threshold>()
            .map(|_| ())
    }

    /// The per-source limit these tunables ask for.
    pub fn source_limit(&self) -> SourceLimit {
        SourceLimit {
            rate_pps: self.syn_rate_per_source,
            burst: self
                .syn_burst_per_source
                .unwrap_or(self.syn_rate_per_source.max(1)),
            prefix_v4: self.source_prefix_v4,
            prefix_v6: self.source_prefix_v6,
        }
    }

    /// Whether a mode that sends cookies is in force (`cookie`, or `auto`, which may).
    pub fn sends_cookies(&self) -> bool {
        matches!(self.mode, Mode::Cookie | Mode::Auto)
    }
}

/// Where the allow and deny lists come from: CIDRs given directly, and files of them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListSources {
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
    pub allow_file: Option<PathBuf>,
    pub deny_file: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn defaults() -> Tunables {
        Tunables {
            mode: Mode::Auto,
            ports: None,
            auto_threshold: Threshold::Absolute(10_000),
            auto_threshold_min: 1_000,
            auto_baseline_secs: 600,
            auto_port_threshold: 0,
            auto_hold_ms: 2_000,
            max_syn_pass_rate: 0,
            max_synack_rate: 0,
            syn_rate_per_source: 0,
            syn_burst_per_source: None,
            source_prefix_v4: 32,
            source_prefix_v6: 128,
        }
    }

    #[test]
    fn a_change_applies_only_its_fields_and_is_checked() {
        let base = defaults();
        let change = TunablesChange {
            mode: Some(Mode::Cookie),
            syn_rate_per_source: Some(100),
            ..TunablesChange::default()
        };
        let next = base.changed(&change).unwrap();
        assert_eq!(next.mode, Mode::Cookie);
        assert_eq!(next.syn_rate_per_source, 100);
        assert_eq!(next.auto_threshold, base.auto_threshold);
        assert_eq!(next.source_limit().burst, 100);

        let bad = TunablesChange {
            mode: Some(Mode::Off),
            source_prefix_v4: Some(33),
            ..TunablesChange::default()
        };
        let error = base.changed(&bad).unwrap_err();
        assert!(error.contains("source-prefix-v4: 33"), "{error}");
        for bad in [
            TunablesChange {
                source_prefix_v6: Some(0),
                ..TunablesChange::default()
            },
            TunablesChange {
                auto_baseline_secs: Some(0),
                ..TunablesChange::default()
            },
            TunablesChange {
                syn_burst_per_source: Some(0),
                ..TunablesChange::default()
            },
            TunablesChange {
                auto_threshold: Some(Threshold::Relative(0.5)),
                ..TunablesChange::default()
            },
        ] {
            assert!(base.changed(&bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn changes_travel_as_json_and_unknown_fields_are_refused() {
        let change = TunablesChange {
            mode: Some(Mode::Monitor),
            ports: Some("80,443".parse().unwrap()),
            auto_threshold: Some(Threshold::Relative(8.0)),
            ..TunablesChange::default()
        };
        let text = serde_json::to_string(&change).unwrap();
        assert_eq!(
            text,
            r#"{"mode":"monitor","ports":"80,443","auto_threshold":"8x"}"#
        );
        assert_eq!(
            serde_json::from_str::<TunablesChange>(&text).unwrap(),
            change
        );
        for bad in [
            r#"{"colour":"blue"}"#,
            r#"{"mode":"fast"}"#,
            r#"{"ports":"0"}"#,
            r#"{"auto_threshold":"0.5x"}"#,
        ] {
            assert!(
                serde_json::from_str::<TunablesChange>(bad).is_err(),
                "{bad} accepted"
            );
        }
        let full = serde_json::to_string(&defaults()).unwrap();
        assert_eq!(serde_json::from_str::<Tunables>(&full).unwrap(), defaults());
    }
}
