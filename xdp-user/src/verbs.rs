//! The CLI verbs that talk to a running synguard through its control socket.

use serde_json::Value;

use crate::{
    Error,
    cli::{ListAction, Target},
    control::{self, ListKind, Request, Response},
};

fn send(target: &Target, request: &Request) -> Result<Value, Error> {
    let Response { ok, error, data } =
        control::request(&target.state_dir, target.iface.as_deref(), request)?;
    match ok {
        true => Ok(data),
        false => Err(Error::Other(error.unwrap_or_else(|| "refused".into()))),
    }
}

pub fn status(target: &Target, json: bool) -> Result<(), Error> {
    let data = send(target, &Request::Status)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&data).unwrap_or_default()
        );
        return Ok(());
    }
    let text = |path: &[&str]| -> String {
        let mut v = &data;
        for key in path {
            v = &v[*key];
        }
        match v {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        }
    };
    let packets = |class: &str| {
        format!(
            "passed {}, dropped {}, answered {}",
            text(&["packets", class, "pass"]),
            text(&["packets", class, "drop"]),
            text(&["packets", class, "tx"])
        )
    };
    println!(
        "synguard on {} ({} XDP, program {}), up {} s{}",
        text(&["iface"]),
        text(&["xdp_mode"]),
        text(&["program_id"]),
        text(&["uptime_seconds"]),
        match data["pinned"].as_str() {
            Some(path) => format!(", pinned at {path}"),
            None => ", not pinned".into(),
        }
    );
    println!(
        "mode        {}{}",
        text(&["mode"]),
        if data["under_attack"] == true {
            " - under attack: answering SYNs with cookies"
        } else {
            ""
        }
    );
    println!("SYN rate    {}/s", text(&["syn_rate"]));
    println!("ports       {}", text(&["ports"]));
    println!(
        "auto        threshold {} (in force {}/s, min {}/s, baseline {}), per port {}, hold {} ms",
        text(&["auto", "threshold"]),
        text(&["auto", "threshold_in_force"]),
        text(&["auto", "threshold_min"]),
        text(&["auto", "baseline"]),
        text(&["auto", "port_threshold"]),
        text(&["auto", "hold_ms"])
    );
    // A limit of 0 is no limit: say so, rather than "0/s burst 1".
    let rate = |path: &[&str]| match text(path).as_str() {
        "0" => "none".to_string(),
        value => format!("{value}/s"),
    };
    let per_source = match rate(&["limits", "syn_rate_per_source"]).as_str() {
        "none" => "none".to_string(),
        per_second => format!(
            "{per_second} burst {} (/{} and /{})",
            text(&["limits", "syn_burst_per_source"]),
            text(&["limits", "source_prefix_v4"]),
            text(&["limits", "source_prefix_v6"]),
        ),
    };
    println!(
        "limits      per source {per_source}, SYNs passed {}, SYN-ACKs {}",
        rate(&["limits", "max_syn_pass_rate"]),
        rate(&["limits", "max_synack_rate"])
    );
    println!(
        "lists       {} allowed, {} denied",
        text(&["lists", "allow"]),
        text(&["lists", "deny"])
    );
    if let Some(sysctls) = data["sysctls"].as_object() {
        for (key, value) in sysctls {
            println!("sysctl      {key} = {}", value.as_str().unwrap_or_default());
        }
    }
    println!("SYNs        {}", packets("syn"));
    println!("ACKs        {}", packets("ack"));
    if let Some(decisions) = data["decisions"].as_object() {
        let nonzero: Vec<String> = decisions
            .iter()
            .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        println!("decisions   {}", nonzero.join(", "));
    }
    Ok(())
}

pub fn top(target: &Target, count: Option<u32>) -> Result<(), Error> {
    use std::{
        io::IsTerminal,
        time::{Duration, Instant},
    };
    let counters = |data: &Value| -> Vec<(String, u64)> {
        let mut all = Vec::new();
        for class in ["syn", "ack"] {
            for action in ["pass", "drop", "tx"] {
                let n = data["packets"][class][action].as_u64().unwrap_or(0);
                all.push((format!("{class} {action}"), n));
            }
        }
        if let Some(decisions) = data["decisions"].as_object() {
            for (reason, n) in decisions {
                all.push((reason.clone(), n.as_u64().unwrap_or(0)));
            }
        }
        all
    };
    let mut before = send(target, &Request::Status)?;
    let mut at = Instant::now();
    let terminal = std::io::stdout().is_terminal();
    let mut shown = 0u32;
    while count.is_none_or(|n| shown < n) {
        std::thread::sleep(Duration::from_secs(1));
        let now = send(target, &Request::Status)?;
        let seconds = at.elapsed().as_secs_f64().max(0.001);
        at = Instant::now();
        if terminal {
            print!("\x1b[2J\x1b[H");
        }
        println!(
            "synguard on {}: mode {}{}",
            now["iface"].as_str().unwrap_or_default(),
            now["mode"].as_str().unwrap_or_default(),
            if now["under_attack"] == true {
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
        match now["top_sources"].as_array() {
            Some(top) if !top.is_empty() => {
                println!("top sources (sampled)");
                for entry in top {
                    println!(
                        "  {:<40} {:>5.1}%",
                        entry["source"].as_str().unwrap_or_default(),
                        entry["share"].as_f64().unwrap_or(0.0) * 100.0
                    );
                }
            }
            _ => println!("top sources: sampled during attacks in auto mode"),
        }
        before = now;
        shown += 1;
    }
    Ok(())
}

pub fn set(target: &Target, pairs: &[String]) -> Result<(), Error> {
    send(
        target,
        &Request::Set {
            pairs: pairs.to_vec(),
        },
    )?;
    println!("set: {}", pairs.join(" "));
    Ok(())
}

pub fn list(target: &Target, kind: ListKind, action: &ListAction) -> Result<(), Error> {
    let strings = |cidrs: &[crate::lists::Cidr]| cidrs.iter().map(|c| c.to_string()).collect();
    match action {
        ListAction::List => {
            let data = send(target, &Request::ListShow { list: kind })?;
            for cidr in data["cidrs"].as_array().into_iter().flatten() {
                println!("{}", cidr.as_str().unwrap_or_default());
            }
        }
        ListAction::Add { cidrs } => {
            send(
                target,
                &Request::ListAdd {
                    list: kind,
                    cidrs: strings(cidrs),
                },
            )?;
            println!("{}: added {}", kind.name(), cidrs.len());
        }
        ListAction::Del { cidrs } => {
            send(
                target,
                &Request::ListDel {
                    list: kind,
                    cidrs: strings(cidrs),
                },
            )?;
            println!("{}: removed {}", kind.name(), cidrs.len());
        }
    }
    Ok(())
}

pub fn detach(target: &Target) -> Result<(), Error> {
    send(target, &Request::Detach)?;
    println!("detach requested: synguard detaches, removes its pins and restores the sysctls");
    Ok(())
}
