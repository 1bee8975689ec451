//! What a running synguard owns, and how it answers the control API: status, run-time
//! changes of the tunables (with the sysctls a mode change needs), and the allow/deny lists.

use std::{sync::Arc, time::Instant};

use serde_json::{Value, json};
use synguard_common::{Action, Class, Mode, Reason, config::flags, config::list};
use tracing::info;

use crate::{
    Error,
    baseline::Threshold,
    cli::RunArgs,
    control::{ListKind, Request, Response},
    events::{Event, Events},
    follow::AutoFollower,
    lists::Cidr,
    loader::Attachment,
    settings::Settings,
    sysctl::{self, SysctlClaim},
    tune,
};

pub struct Daemon {
    /// The settings as tuned at run time (`synguard set`).
    pub args: RunArgs,
    pub attachment: Attachment,
    /// This interface's part in the namespace's sysctls.
    pub sysctls: SysctlClaim,
    pub follower: AutoFollower,
    pub started: Instant,
    pub events: Arc<Events>,
}

impl Daemon {
    pub fn handle(&mut self, request: Request) -> Response {
        let result = match request {
            Request::Status => self.status(),
            Request::Set { pairs } => self.set(&pairs),
            Request::ListShow { list } => self.list_show(list),
            Request::ListAdd { list, cidrs } => self.list_change(list, &cidrs, true),
            Request::ListDel { list, cidrs } => self.list_change(list, &cidrs, false),
            // The main loop stops on it before asking here.
            Request::Detach => Ok(Value::Null),
        };
        match result {
            Ok(data) => Response::ok(data),
            Err(e) => Response::error(e.to_string()),
        }
    }

    fn status(&mut self) -> Result<Value, Error> {
        let stats = self.attachment.stats().read()?;
        let control = self.attachment.control();
        let (config, auto) = {
            let control = control.lock().unwrap_or_else(|e| e.into_inner());
            (control.config()?, control.auto_summary()?)
        };
        let (allowed, denied) = {
            let lists = self.attachment.lists();
            let lists = lists.lock().unwrap_or_else(|e| e.into_inner());
            let entries = lists.entries()?;
            let count = |verdict| entries.iter().filter(|(_, v)| *v == verdict).count();
            (count(list::ALLOW), count(list::DENY))
        };
        let class = |class: Class| {
            json!({
                "pass": stats.packets(class, Action::Pass),
                "drop": stats.packets(class, Action::Drop),
                "tx": stats.packets(class, Action::Tx),
            })
        };
        let decisions: serde_json::Map<String, Value> = Reason::ALL
            .iter()
            .map(|r| (r.name().to_string(), json!(stats.reason(*r))))
            .collect();
        let mut sysctls = serde_json::Map::new();
        for key in [sysctl::SYNCOOKIES, sysctl::TIMESTAMPS] {
            sysctls.insert(key.into(), json!(sysctl::read(key).unwrap_or_default()));
        }
        let top: Vec<Value> = self
            .follower
            .top_sources(10, &config)
            .into_iter()
            .map(|(source, share)| json!({ "source": source, "share": share }))
            .collect();
        let args = &self.args;
        let under_attack = match config.mode() {
            Mode::Cookie => true,
            Mode::Auto => auto.under_attack,
            Mode::Off | Mode::Monitor => false,
        };
        Ok(json!({
            "iface": self.attachment.iface(),
            "xdp_mode": self.attachment.mode().name(),
            "program_id": self.attachment.program_id(),
            "pinned": self.attachment.pinned().map(|p| p.path.display().to_string()),
            "took_over": self.attachment.adopted(),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "mode": config.mode().name(),
            "under_attack": under_attack,
            "syn_rate": auto.syn_rate_pps,
            "ports": args.ports.as_ref().map_or("every port with a listener".to_string(), |p| p.to_string()),
            "auto": {
                "threshold": args.auto_threshold.to_string(),
                "threshold_in_force": config.auto_threshold_pps,
                "threshold_min": args.auto_threshold_min,
                "baseline": self.follower.baseline(),
                "port_threshold": config.auto_port_threshold_pps,
                "hold_ms": config.auto_hold_ms,
            },
            "limits": {
                "syn_rate_per_source": args.syn_rate_per_source,
                "syn_burst_per_source": args.syn_burst_per_source.unwrap_or(args.syn_rate_per_source.max(1)),
                "source_prefix_v4": config.source_prefix_v4,
                "source_prefix_v6": config.source_prefix_v6,
                "max_syn_pass_rate": config.syn_pass_cap_pps,
                "max_synack_rate": config.synack_cap_pps,
            },
            "lists": { "allow": allowed, "deny": denied },
            "sysctls": sysctls,
            "packets": {
                "syn": class(Class::Syn),
                "ack": class(Class::Ack),
            },
            "decisions": decisions,
            "sources_metered": stats.sources_metered,
            "top_sources": top,
        }))
    }

    /// Applies `KEY=VALUE` pairs, all or none.
    fn set(&mut self, pairs: &[String]) -> Result<Value, Error> {
        let tuned = tune::apply(&self.args, pairs)?;
        self.apply(tuned, &pairs.join(" "), false)?;
        Ok(json!({ "changed": pairs }))
    }

    /// Takes a reloaded configuration (SIGHUP), all or nothing: the settings that need a
    /// restart must not have changed.
    pub fn reload(&mut self, new: RunArgs) -> Result<(), Error> {
        let old = &self.args;
        let fixed = [
            ("iface", old.iface != new.iface),
            ("xdp-mode", old.xdp_mode != new.xdp_mode),
            ("metrics-addr", old.metrics_addr != new.metrics_addr),
            ("state-dir", old.state_dir != new.state_dir),
            ("no-pin", old.no_pin != new.no_pin),
            ("bpffs", old.bpffs != new.bpffs),
            (
                "cookie-timestamps",
                old.cookie_timestamps != new.cookie_timestamps,
            ),
            ("log-format", old.log_format != new.log_format),
        ];
        if let Some((key, _)) = fixed.iter().find(|(_, changed)| *changed) {
            return Err(Error::Other(format!(
                "'{key}' changed; it takes a restart of synguard to apply"
            )));
        }
        self.apply(new, "reloaded from the config file", true)
    }

    /// Puts `tuned` in force: sysctls for the mode, the data path's configuration and ports,
    /// `auto`'s follower, and with `lists`, the allow/deny lists as `tuned` gives them.
    fn apply(&mut self, tuned: RunArgs, what: &str, lists: bool) -> Result<(), Error> {
        let mut settings = Settings::derive(&tuned, self.attachment.iface())?;
        let control = self.attachment.control();
        let mut control = control.lock().unwrap_or_else(|e| e.into_inner());
        let current = control.config()?;
        // What is not a setting stays: the sketch's seed, the lists (changed by their own
        // verbs), and a relative threshold's learned value (the follower moves it).
        let config = &mut settings.config;
        config.sketch_seed = current.sketch_seed;
        if !lists {
            config.flags = (config.flags & !flags::LISTS) | (current.flags & flags::LISTS);
        }
        if matches!(tuned.auto_threshold, Threshold::Relative(_))
            && matches!(self.args.auto_threshold, Threshold::Relative(_))
        {
            config.auto_threshold_pps = current.auto_threshold_pps;
        }
        let sends = |mode| matches!(mode, Mode::Cookie | Mode::Auto);
        // Sysctls before a mode that sends cookies, after one that stops.
        if sends(tuned.mode) {
            self.sysctls.join(tuned.cookie_timestamps)?;
            // Cookie mode claims tcp_syncookies=2 for good; auto only during an attack (the
            // follower claims it then), so leaving cookie mode lets go of it.
            match tuned.mode {
                Mode::Cookie => self.sysctls.cookies(true)?,
                _ if self.args.mode == Mode::Cookie => self.sysctls.cookies(false)?,
                _ => {}
            }
            // What a SYN-ACK promises follows tcp_timestamps, which joining may just have set:
            // the data path sees it before the mode that answers, not a poll later.
            self.attachment.follow_host()?;
        }
        if let Some(ports) = &settings.ports {
            control.set_ports(ports)?;
        }
        if lists {
            // Entries to keep are written over in place: no packet sees them missing.
            self.attachment
                .lists()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .load(&settings.lists)?;
        }
        control.set_config(&settings.config)?;
        drop(control);
        if !sends(tuned.mode) {
            self.sysctls.leave()?;
        }
        self.follower
            .retarget(tuned.auto_threshold, tuned.auto_threshold_min);
        self.follower
            .set_active(tuned.mode == Mode::Auto, &self.attachment, &self.sysctls);
        info!(changes = %what, "settings changed");
        self.events.record(Event::ConfigChanged);
        if tuned.mode != self.args.mode {
            info!(
                from = self.args.mode.name(),
                to = tuned.mode.name(),
                "mode changed"
            );
            self.events.record(Event::ModeChanged);
        }
        self.args = tuned;
        Ok(())
    }

    fn list_show(&self, kind: ListKind) -> Result<Value, Error> {
        let lists = self.attachment.lists();
        let lists = lists.lock().unwrap_or_else(|e| e.into_inner());
        let verdict = verdict(kind);
        let cidrs: Vec<String> = lists
            .entries()?
            .into_iter()
            .filter(|(_, v)| *v == verdict)
            .map(|(cidr, _)| cidr.to_string())
            .collect();
        Ok(json!({ "list": kind.name(), "cidrs": cidrs }))
    }

    /// Adds or removes CIDRs, all or none: a bad CIDR, one on the other list, or (to remove)
    /// one not on this list refuses the whole request.
    fn list_change(&mut self, kind: ListKind, cidrs: &[String], add: bool) -> Result<Value, Error> {
        let parsed: Vec<Cidr> = cidrs
            .iter()
            .map(|text| text.parse::<Cidr>().map_err(Error::Other))
            .collect::<Result<_, _>>()?;
        if parsed.is_empty() {
            return Err(Error::Other("no CIDR given".into()));
        }
        let lists = self.attachment.lists();
        let mut lists = lists.lock().unwrap_or_else(|e| e.into_inner());
        let entries = lists.entries()?;
        let on = |cidr: &Cidr| entries.iter().find(|(c, _)| c == cidr).map(|(_, v)| *v);
        let (verdict, other) = (verdict(kind), verdict(other_list(kind)));
        for cidr in &parsed {
            match (add, on(cidr)) {
                (true, Some(v)) if v == other => {
                    return Err(Error::Other(format!(
                        "{cidr} is on the {} list; remove it there first",
                        other_list(kind).name()
                    )));
                }
                (false, v) if v != Some(verdict) => {
                    return Err(Error::Other(format!(
                        "{cidr} is not on the {} list",
                        kind.name()
                    )));
                }
                _ => {}
            }
        }
        for cidr in &parsed {
            if add {
                lists.insert(cidr, verdict)?;
            } else {
                lists.remove(cidr)?;
            }
        }
        let any = !lists.entries()?.is_empty();
        drop(lists);
        self.attachment
            .control()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .update_config(|config| match any {
                true => config.flags |= flags::LISTS,
                false => config.flags &= !flags::LISTS,
            })?;
        info!(
            list = kind.name(),
            action = if add { "added" } else { "removed" },
            cidrs = %cidrs.join(" "),
            "list changed"
        );
        Ok(json!({ "list": kind.name(), "changed": cidrs }))
    }
}

fn verdict(kind: ListKind) -> u32 {
    match kind {
        ListKind::Allow => list::ALLOW,
        ListKind::Deny => list::DENY,
    }
}

fn other_list(kind: ListKind) -> ListKind {
    match kind {
        ListKind::Allow => ListKind::Deny,
        ListKind::Deny => ListKind::Allow,
    }
}
