//! One protected interface of a running synguard: what it owns, and how it answers the control
//! API: status, run-time changes of the tunables (with the sysctls a mode change needs), and
//! the allow/deny lists.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use synguard_common::{Action, Class, Mode, Reason, config::flags, config::list};
use tracing::info;

use crate::{
    Error,
    config::{
        lists::Cidr,
        settings::Settings,
        threshold::Threshold,
        tunables::{ListSources, Tunables, TunablesChange},
    },
    control::protocol::{
        AutoStatus, Changed, CidrText, ClassPackets, Detached, Limits, ListChanged, ListCounts,
        ListEntries, ListKind, Packets, PortHandshakeCounts, Reply, Request, Response, Status,
        TopSource,
    },
    daemon::follow::{AutoFollower, Live},
    datapath::loader::Attachment,
    host::sysctl::{self, SysctlClaim},
    sync::lock,
    telemetry::events::{Event, Events},
};

pub struct Instance {
    /// The tunables in force, as tuned at run time.
    pub tunables: Tunables,
    /// Fixed for the run (a reload that changes it is refused).
    pub cookie_timestamps: bool,
    pub attachment: Attachment,
    /// This interface's part in the namespace's sysctls.
    pub sysctls: SysctlClaim,
    pub follower: AutoFollower,
    pub started: Instant,
    pub events: Arc<Events>,
}

impl Instance {
    pub fn handle(&mut self, request: Request) -> Response<Reply> {
        let result = match request {
            Request::Status => self.status().map(|s| Reply::Status(Box::new(s))),
            Request::Set { change } => self.set(&change).map(Reply::Changed),
            Request::ListShow { list } => self.list_show(list).map(Reply::List),
            Request::ListAdd { list, cidrs } => {
                self.list_change(list, &cidrs, true).map(Reply::ListChanged)
            }
            Request::ListDel { list, cidrs } => self
                .list_change(list, &cidrs, false)
                .map(Reply::ListChanged),
            // The main loop stops on it before asking here.
            Request::Detach => Ok(Reply::Detached(Detached { detached: true })),
        };
        match result {
            Ok(reply) => Response::ok(reply),
            Err(e) => Response::error(e.to_string()),
        }
    }

    /// The follower's view of this instance's data path and sysctls.
    pub fn plant(&self) -> Live<'_> {
        Live {
            attachment: &self.attachment,
            sysctls: &self.sysctls,
        }
    }

    fn status(&mut self) -> Result<Status, Error> {
        let stats = self.attachment.stats().read()?;
        let (config, auto) = {
            let control = self.attachment.control();
            let control = lock(&control);
            (control.config()?, control.auto_summary()?)
        };
        let lists = {
            let lists = self.attachment.lists();
            let entries = lock(&lists).entries()?;
            let count = |verdict| entries.iter().filter(|(_, v)| *v == verdict).count();
            ListCounts {
                allow: count(list::ALLOW),
                deny: count(list::DENY),
            }
        };
        let class = |class: Class| ClassPackets {
            pass: stats.packets(class, Action::Pass),
            drop: stats.packets(class, Action::Drop),
            tx: stats.packets(class, Action::Tx),
        };
        let decisions = Reason::ALL
            .iter()
            .map(|r| (r.name().to_string(), stats.reason(*r)))
            .collect();
        let sysctls: BTreeMap<String, String> = [sysctl::SYNCOOKIES, sysctl::TIMESTAMPS]
            .into_iter()
            .map(|key| (key.to_string(), sysctl::read(key).unwrap_or_default()))
            .collect();
        let top_sources = self
            .follower
            .top_sources(10, &config)
            .into_iter()
            .map(|(source, share)| TopSource { source, share })
            .collect();
        let tunables = &self.tunables;
        let under_attack = match config.mode() {
            Mode::Cookie => true,
            Mode::Auto => auto.under_attack,
            Mode::Off | Mode::Monitor => false,
        };
        let limit = tunables.source_limit();
        Ok(Status {
            iface: self.attachment.iface().to_string(),
            xdp_mode: self.attachment.mode().name().to_string(),
            program_id: self.attachment.program_id(),
            pinned: self
                .attachment
                .pinned()
                .map(|p| p.path.display().to_string()),
            took_over: self.attachment.adopted(),
            fast_path: self.attachment.fast_path(),
            uptime_seconds: self.started.elapsed().as_secs(),
            mode: config.mode().name().to_string(),
            under_attack,
            syn_rate: auto.syn_rate_pps,
            ports: tunables
                .ports
                .as_ref()
                .map_or("every port with a listener".to_string(), |p| p.to_string()),
            auto: AutoStatus {
                threshold: tunables.auto_threshold.to_string(),
                threshold_in_force: config.auto_threshold_pps,
                threshold_min: tunables.auto_threshold_min,
                baseline: self.follower.baseline(),
                port_threshold: config.auto_port_threshold_pps,
                hold_ms: config.auto_hold_ms,
            },
            limits: Limits {
                syn_rate_per_source: limit.rate_pps,
                syn_burst_per_source: limit.burst,
                source_prefix_v4: config.source_prefix_v4,
                source_prefix_v6: config.source_prefix_v6,
                max_syn_pass_rate: config.syn_pass_cap_pps,
                max_synack_rate: config.synack_cap_pps,
            },
            lists,
            sysctls,
            packets: Packets {
                syn: class(Class::Syn),
                ack: class(Class::Ack),
            },
            decisions,
            sources_metered: stats.sources_metered,
            top_sources,
            handshakes: lock(&self.attachment.handshakes())
                .read()?
                .into_iter()
                .map(|row| PortHandshakeCounts {
                    port: row.label(),
                    answered: row.answered,
                    completed: row.completed,
                })
                .collect(),
        })
    }

    /// Applies a change to the tunables, all or none.
    fn set(&mut self, change: &TunablesChange) -> Result<Changed, Error> {
        if change.is_empty() {
            return Err(Error::Refused("nothing to set".into()));
        }
        let tuned = self.tunables.changed(change).map_err(Error::Refused)?;
        let keys = changed_keys(change);
        let sources = ListSources::default();
        self.apply(tuned, false, &sources, &keys.join(" "))?;
        Ok(Changed { changed: keys })
    }

    /// Takes a reloaded configuration (SIGHUP), tunables and lists, all or nothing. The caller
    /// has refused one that changes what takes a restart (`cli::Startup::restart_needed`).
    pub fn reload(&mut self, tunables: Tunables, lists: &ListSources) -> Result<(), Error> {
        tunables.check().map_err(Error::Refused)?;
        self.apply(tunables, true, lists, "reloaded from the config file")
    }

    /// Puts `tuned` in force: sysctls for the mode, the data path's configuration and ports,
    /// `auto`'s follower, and with `reload_lists`, the allow/deny lists from `lists`.
    fn apply(
        &mut self,
        tuned: Tunables,
        reload_lists: bool,
        lists: &ListSources,
        what: &str,
    ) -> Result<(), Error> {
        let mut settings = Settings::derive(
            &tuned,
            lists,
            self.cookie_timestamps,
            self.attachment.iface(),
        )?;
        let control = self.attachment.control();
        let mut control = lock(&control);
        let current = control.config()?;
        // What is not a setting stays: the sketch's seed, the lists (changed by their own
        // verbs), and a relative threshold's learned value (the follower moves it).
        let config = &mut settings.config;
        config.sketch_seed = current.sketch_seed;
        if !reload_lists {
            config.flags = (config.flags & !flags::LISTS) | (current.flags & flags::LISTS);
        }
        if matches!(tuned.auto_threshold, Threshold::Relative(_))
            && matches!(self.tunables.auto_threshold, Threshold::Relative(_))
        {
            config.auto_threshold_pps = current.auto_threshold_pps;
        }
        // Sysctls before a mode that sends cookies, after one that stops.
        if tuned.sends_cookies() {
            self.sysctls.join(self.cookie_timestamps)?;
            // Cookie mode claims tcp_syncookies=2 for good; auto only during an attack (the
            // follower claims it then), so leaving cookie mode lets go of it.
            match tuned.mode {
                Mode::Cookie => self.sysctls.cookies(true)?,
                _ if self.tunables.mode == Mode::Cookie => self.sysctls.cookies(false)?,
                _ => {}
            }
            // What a SYN-ACK promises follows tcp_timestamps, which joining may just have set:
            // the data path sees it before the mode that answers, not a poll later.
            self.attachment.follow_host()?;
        }
        if let Some(ports) = &settings.ports {
            control.set_ports(ports)?;
        }
        if reload_lists {
            // Entries to keep are written over in place: no packet sees them missing.
            lock(&self.attachment.lists()).load(&settings.lists)?;
        }
        control.set_config(&settings.config)?;
        drop(control);
        if !tuned.sends_cookies() {
            self.sysctls.leave()?;
        }
        self.follower
            .retarget(tuned.auto_threshold, tuned.auto_threshold_min);
        let auto = tuned.mode == Mode::Auto;
        let plant = Live {
            attachment: &self.attachment,
            sysctls: &self.sysctls,
        };
        self.follower.set_active(auto, &plant);
        info!(changes = %what, "settings changed");
        self.events.record(Event::ConfigChanged);
        if tuned.mode != self.tunables.mode {
            info!(
                from = self.tunables.mode.name(),
                to = tuned.mode.name(),
                "mode changed"
            );
            self.events.record(Event::ModeChanged);
        }
        self.tunables = tuned;
        Ok(())
    }

    fn list_show(&self, kind: ListKind) -> Result<ListEntries, Error> {
        let lists = self.attachment.lists();
        let verdict = verdict(kind);
        let cidrs = lock(&lists)
            .entries()?
            .into_iter()
            .filter(|(_, v)| *v == verdict)
            .map(|(cidr, _)| cidr.to_string())
            .collect();
        Ok(ListEntries { list: kind, cidrs })
    }

    /// Adds or removes CIDRs, all or none (`plan_list_change`).
    fn list_change(
        &mut self,
        kind: ListKind,
        cidrs: &[CidrText],
        add: bool,
    ) -> Result<ListChanged, Error> {
        let cidrs: Vec<Cidr> = cidrs.iter().map(|c| c.0).collect();
        let lists = self.attachment.lists();
        let mut lists = lock(&lists);
        let entries = lists.entries()?;
        plan_list_change(&entries, kind, &cidrs, add).map_err(Error::Refused)?;
        for cidr in &cidrs {
            if add {
                lists.insert(cidr, verdict(kind))?;
            } else {
                lists.remove(cidr)?;
            }
        }
        let any = !lists.entries()?.is_empty();
        drop(lists);
        lock(&self.attachment.control()).update_config(|config| match any {
            true => config.flags |= flags::LISTS,
            false => config.flags &= !flags::LISTS,
        })?;
        let changed: Vec<String> = cidrs.iter().map(Cidr::to_string).collect();
        info!(
            list = kind.name(),
            action = if add { "added" } else { "removed" },
            cidrs = %changed.join(" "),
            "list changed"
        );
        Ok(ListChanged {
            list: kind,
            changed,
        })
    }
}

/// Checks a list change against the lists as they are, before anything is written: a CIDR on
/// the other list refuses an add (remove it there first), one not on this list refuses a
/// remove, and an empty change is refused.
pub fn plan_list_change(
    entries: &[(Cidr, u32)],
    kind: ListKind,
    cidrs: &[Cidr],
    add: bool,
) -> Result<(), String> {
    if cidrs.is_empty() {
        return Err("no CIDR given".into());
    }
    let on = |cidr: &Cidr| entries.iter().find(|(c, _)| c == cidr).map(|(_, v)| *v);
    let (this, other) = (verdict(kind), verdict(kind.other()));
    for cidr in cidrs {
        match (add, on(cidr)) {
            (true, Some(v)) if v == other => {
                return Err(format!(
                    "{cidr} is on the {} list; remove it there first",
                    kind.other().name()
                ));
            }
            (false, v) if v != Some(this) => {
                return Err(format!("{cidr} is not on the {} list", kind.name()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The flag names of the fields a change sets, for the log and the reply.
fn changed_keys(change: &TunablesChange) -> Vec<String> {
    let value = serde_json::to_value(change).unwrap_or_default();
    value
        .as_object()
        .map(|fields| {
            fields
                .iter()
                .map(|(key, value)| {
                    let text = value
                        .as_str()
                        .map_or_else(|| value.to_string(), str::to_string);
                    format!("{}={text}", key.replace('_', "-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn verdict(kind: ListKind) -> u32 {
    match kind {
        ListKind::Allow => list::ALLOW,
        ListKind::Deny => list::DENY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn list_changes_are_refused_whole_on_any_conflict() {
        let entries = [
            (cidr("198.18.0.0/24"), list::ALLOW),
            (cidr("198.18.1.0/24"), list::DENY),
        ];
        let plan = |kind, cidrs: &[&str], add| {
            let cidrs: Vec<Cidr> = cidrs.iter().map(|c| cidr(c)).collect();
            plan_list_change(&entries, kind, &cidrs, add)
        };
        assert_eq!(plan(ListKind::Allow, &["198.18.2.0/24"], true), Ok(()));
        // Already on this list: adding again is harmless.
        assert_eq!(plan(ListKind::Allow, &["198.18.0.0/24"], true), Ok(()));
        let error = plan(ListKind::Deny, &["198.18.2.0/24", "198.18.0.0/24"], true).unwrap_err();
        assert!(error.contains("198.18.0.0/24 is on the allow list; remove it there first"));
        let error = plan(ListKind::Allow, &["198.18.1.0/24"], true).unwrap_err();
        assert!(error.contains("is on the deny list"), "{error}");
        assert_eq!(plan(ListKind::Deny, &["198.18.1.0/24"], false), Ok(()));
        let error = plan(ListKind::Deny, &["198.18.0.0/24"], false).unwrap_err();
        assert!(
            error.contains("198.18.0.0/24 is not on the deny list"),
            "{error}"
        );
        let error = plan(ListKind::Allow, &["198.18.9.0/24"], false).unwrap_err();
        assert!(error.contains("is not on the allow list"), "{error}");
        assert_eq!(
            plan(ListKind::Allow, &[], true),
            Err("no CIDR given".into())
        );
    }

    #[test]
    fn a_change_is_logged_by_the_flags_it_sets() {
        let change = TunablesChange {
            mode: Some(Mode::Cookie),
            syn_rate_per_source: Some(100),
            ..TunablesChange::default()
        };
        assert_eq!(
            changed_keys(&change),
            ["mode=cookie", "syn-rate-per-source=100"]
        );
    }
}
