//! The CLI verbs that talk to a running synguard through its control socket.

use serde::de::DeserializeOwned;

use crate::{
    Error,
    cli::{ListAction, Target, tune},
    config::lists::Cidr,
    control::{
        self,
        protocol::{
            Changed, CidrText, ClassPackets, Detached, ListChanged, ListEntries, ListKind, Request,
            Status,
        },
    },
    daemon::follow::percent,
};

fn send<T: DeserializeOwned>(target: &Target, request: &Request) -> Result<T, Error> {
    control::request(&target.state_dir, target.iface.as_deref(), request)
}

pub fn status(target: &Target, json: bool) -> Result<(), Error> {
    let status: Status = send(target, &Request::Status)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        );
        return Ok(());
    }
    let packets = |class: &ClassPackets| {
        format!(
            "passed {}, dropped {}, answered {}",
            class.pass, class.drop, class.tx
        )
    };
    println!(
        "synguard on {} ({} XDP, program {}), up {} s{}",
        status.iface,
        status.xdp_mode,
        status.program_id,
        status.uptime_seconds,
        match &status.pinned {
            Some(path) => format!(", pinned at {path}"),
            None => ", not pinned".into(),
        }
    );
    println!(
        "mode        {}{}",
        status.mode,
        if status.under_attack {
            " - under attack: answering SYNs with cookies"
        } else {
            ""
        }
    );
    println!("SYN rate    {}/s", status.syn_rate);
    println!(
        "fast path   {}",
        if status.fast_path {
            "on: SYNs from sources that own no socket are answered without the socket lookup"
        } else {
            "off: every SYN gets the socket lookup (the owner filter is not built; see the log)"
        }
    );
    println!("ports       {}", status.ports);
    let auto = &status.auto;
    println!(
        "auto        threshold {} (in force {}/s, min {}/s, baseline {}), per port {}, hold {} ms",
        auto.threshold,
        auto.threshold_in_force,
        auto.threshold_min,
        auto.baseline.map_or("-".into(), |rate| rate.to_string()),
        auto.port_threshold,
        auto.hold_ms
    );
    // A limit of 0 is no limit: say so, rather than "0/s burst 1".
    let rate = |value: u32| match value {
        0 => "none".to_string(),
        value => format!("{value}/s"),
    };
    let limits = &status.limits;
    let per_source = match limits.syn_rate_per_source {
        0 => "none".to_string(),
        per_second => format!(
            "{per_second}/s burst {} (/{} and /{})",
            limits.syn_burst_per_source, limits.source_prefix_v4, limits.source_prefix_v6,
        ),
    };
    println!(
        "limits      per source {per_source}, SYNs passed {}, SYN-ACKs {}",
        rate(limits.max_syn_pass_rate),
        rate(limits.max_synack_rate)
    );
    println!(
        "lists       {} allowed, {} denied",
        status.lists.allow, status.lists.deny
    );
    for (key, value) in &status.sysctls {
        println!("sysctl      {key} = {value}");
    }
    println!("SYNs        {}", packets(&status.packets.syn));
    println!("ACKs        {}", packets(&status.packets.ack));
    let nonzero: Vec<String> = status
        .decisions
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    println!("decisions   {}", nonzero.join(", "));
    let handshakes: Vec<String> = status
        .handshakes
        .iter()
        .filter(|h| h.answered + h.completed > 0)
        .map(|h| {
            format!(
                "port {}: {} SYN-ACKs, {} completed ({})",
                h.port,
                h.answered,
                h.completed,
                percent(h.completed, h.answered)
            )
        })
        .collect();
    println!(
        "handshakes  {}",
        match handshakes.is_empty() {
            true => "none answered from XDP yet".to_string(),
            false => handshakes.join("; "),
        }
    );
    Ok(())
}

pub fn top(target: &Target, count: Option<u32>) -> Result<(), Error> {
    use std::{
        io::IsTerminal,
        time::{Duration, Instant},
    };
    let counters = |status: &Status| -> Vec<(String, u64)> {
        let mut all = Vec::new();
        for (class, packets) in [("syn", &status.packets.syn), ("ack", &status.packets.ack)] {
            for (action, n) in [
                ("pass", packets.pass),
                ("drop", packets.drop),
                ("tx", packets.tx),
            ] {
                all.push((format!("{class} {action}"), n));
            }
        }
        for (reason, n) in &status.decisions {
            all.push((reason.clone(), *n));
        }
        all
    };
    let mut before: Status = send(target, &Request::Status)?;
    let mut at = Instant::now();
    let terminal = std::io::stdout().is_terminal();
    let mut shown = 0u32;
    while count.is_none_or(|n| shown < n) {
        std::thread::sleep(Duration::from_secs(1));
        let now: Status = send(target, &Request::Status)?;
        let seconds = at.elapsed().as_secs_f64().max(0.001);
        at = Instant::now();
        if terminal {
            print!("\x1b[2J\x1b[H");
        }
        println!(
            "synguard on {}: mode {}{}",
            now.iface,
            now.mode,
            if now.under_attack {
                ", UNDER ATTACK (cookies)"
            } else {
                ""
            }
        );
        println!("{:<28} {:>12}", "per second", "");
        for ((name, new), (_, old)) in counters(&now).iter().zip(counters(&before)) {
            let rate = new.saturating_sub(old) as f64 / seconds;
            if rate > 0.0 || name.contains(' ') {
                println!("{name:<28} {rate:>12.0}");
            }
        }
        // Completion per port over the last second: near 100 % for real clients, near 0 for
        // a spoofed flood.
        let mut shown_header = false;
        for h in &now.handshakes {
            let old = before.handshakes.iter().find(|o| o.port == h.port);
            let (answered, completed) = old.map_or((h.answered, h.completed), |o| {
                (
                    h.answered.saturating_sub(o.answered),
                    h.completed.saturating_sub(o.completed),
                )
            });
            if answered + completed == 0 {
                continue;
            }
            if !shown_header {
                println!(
                    "{:<12} {:>14} {:>14} {:>11}",
                    "handshakes", "SYN-ACKs/s", "completed/s", "completion"
                );
                shown_header = true;
            }
            println!(
                "  port {:<7} {:>14.0} {:>14.0} {:>11}",
                h.port,
                answered as f64 / seconds,
                completed as f64 / seconds,
                percent(completed, answered)
            );
        }
        match now.top_sources.as_slice() {
            [] => println!("top sources: sampled during attacks in auto mode"),
            top => {
                println!("top sources (sampled)");
                for entry in top {
                    println!("  {:<40} {:>5.1}%", entry.source, entry.share * 100.0);
                }
            }
        }
        before = now;
        shown += 1;
    }
    Ok(())
}

pub fn set(target: &Target, pairs: &[String]) -> Result<(), Error> {
    let change = tune::parse(pairs)?;
    let _: Changed = send(target, &Request::Set { change })?;
    println!("set: {}", pairs.join(" "));
    Ok(())
}

pub fn list(target: &Target, kind: ListKind, action: &ListAction) -> Result<(), Error> {
    let wire = |cidrs: &[Cidr]| cidrs.iter().map(|c| CidrText(*c)).collect();
    match action {
        ListAction::List => {
            let entries: ListEntries = send(target, &Request::ListShow { list: kind })?;
            for cidr in entries.cidrs {
                println!("{cidr}");
            }
        }
        ListAction::Add { cidrs } => {
            let _: ListChanged = send(
                target,
                &Request::ListAdd {
                    list: kind,
                    cidrs: wire(cidrs),
                },
            )?;
            println!("{}: added {}", kind.name(), cidrs.len());
        }
        ListAction::Del { cidrs } => {
            let _: ListChanged = send(
                target,
                &Request::ListDel {
                    list: kind,
                    cidrs: wire(cidrs),
                },
            )?;
            println!("{}: removed {}", kind.name(), cidrs.len());
        }
    }
    Ok(())
}

pub fn detach(target: &Target) -> Result<(), Error> {
    let _: Detached = send(target, &Request::Detach)?;
    println!("detach requested: synguard detaches, removes its pins and restores the sysctls");
    Ok(())
}
