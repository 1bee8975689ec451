//! `synguard run`: check, configure, attach, serve metrics and follow `auto` mode until told to
//! stop; then detach and put the sysctls back.

use std::time::Duration;

use synguard_common::Mode;
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
    sync::oneshot,
};
use tracing::{info, warn};

use crate::{
    Error,
    cli::RunArgs,
    loader::Attachment,
    metrics, preflight,
    settings::Settings,
    sysctl::{self, Sysctls},
};

/// How often the controller looks at `auto` mode's state to follow it with tcp_syncookies.
const AUTO_POLL: Duration = Duration::from_millis(20);

pub async fn run(args: &RunArgs) -> Result<(), Error> {
    // Everything that can fail without side effects comes first, so a bad invocation leaves the
    // interface as it found it.
    preflight::check_capabilities()?;
    preflight::interface_index(&args.iface)?;
    let settings = Settings::derive(args)?;
    let listener = TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|e| Error::metrics_addr(args.metrics_addr, &e))?;
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| Error::Other(format!("installing the SIGINT handler failed: {e}")))?;
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| Error::Other(format!("installing the SIGTERM handler failed: {e}")))?;

    // Attached passing everything first (attaching is what fails on a busy or unfit
    // interface); then the sysctls that make cookies valid; then the mode that sends them.
    let attachment = Attachment::attach(&args.iface, args.xdp_mode, &settings)?;
    let sysctls = apply_sysctls(args)?;
    attachment.configure(&settings)?;
    info!(
        iface = %args.iface,
        xdp_mode = args.xdp_mode.name(),
        mode = args.mode.name(),
        ports = %args.ports.as_ref().map_or("every port with a listener".to_string(), |p| p.to_string()),
        allowed = settings.lists.allow.len(),
        denied = settings.lists.deny.len(),
        syn_rate_per_source = args.syn_rate_per_source,
        program_id = attachment.program_id(),
        "attached"
    );
    let registry = metrics::registry(&attachment)?;
    info!("serving metrics on http://{}/metrics", args.metrics_addr);

    let (stop_server, server_stopped) = oneshot::channel::<()>();
    let mut server = tokio::spawn(metrics::serve(listener, registry, async {
        let _ = server_stopped.await;
    }));
    let mut ticker = tokio::time::interval(AUTO_POLL);
    let mut attacked = false;
    let outcome = loop {
        tokio::select! {
            _ = sigint.recv() => break Ok("SIGINT"),
            _ = sigterm.recv() => break Ok("SIGTERM"),
            served = &mut server => break Err(Error::Other(format!(
                "the metrics server stopped: {}",
                served.map_or_else(|e| e.to_string(), |r| r.err().map_or("no error".into(), |e| e.to_string()))
            ))),
            _ = ticker.tick(), if args.mode == Mode::Auto => {
                follow_auto(&attachment, sysctls.as_ref(), &mut attacked);
            }
        }
    };
    if let Ok(signal) = &outcome {
        info!(signal, "shutting down");
    }
    let _ = stop_server.send(());
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;

    let iface = attachment.iface().to_string();
    attachment.detach();
    info!(%iface, "detached");
    if let Some(sysctls) = sysctls {
        sysctls.restore()?;
    }
    outcome.map(|_| ())
}

/// Sets what the mode needs, after recording the previous values.
fn apply_sysctls(args: &RunArgs) -> Result<Option<Sysctls>, Error> {
    let sends_cookies = matches!(args.mode, Mode::Cookie | Mode::Auto);
    if !sends_cookies {
        return Ok(None);
    }
    let mut keys = vec![sysctl::SYNCOOKIES];
    if args.cookie_timestamps {
        keys.push(sysctl::TIMESTAMPS);
    }
    let sysctls = Sysctls::take(&args.state_dir, &args.iface, &keys)?;
    if args.cookie_timestamps {
        sysctls.set(sysctl::TIMESTAMPS, "2")?;
    }
    match args.mode {
        Mode::Cookie => sysctls.set(sysctl::SYNCOOKIES, "2")?,
        // Until an attack, the kernel keeps the operator's setting: with 2 it would answer
        // every SYN it gets with a cookie of its own, and clients without timestamps would
        // lose window scaling and SACK. The original value is put back now in case a crashed
        // run left 2 behind.
        _ => sysctls.set(
            sysctl::SYNCOOKIES,
            sysctls.original(sysctl::SYNCOOKIES).unwrap_or("1"),
        )?,
    }
    Ok(Some(sysctls))
}

/// `auto` mode decides in the data path; the controller follows with tcp_syncookies (2 while
/// under attack, for the stamping helper; the operator's value otherwise) and logs the change.
fn follow_auto(attachment: &Attachment, sysctls: Option<&Sysctls>, attacked: &mut bool) {
    let summary = match attachment.control().lock() {
        Ok(control) => control.auto_summary(),
        Err(_) => return,
    };
    let summary = match summary {
        Ok(summary) => summary,
        Err(e) => {
            warn!(error = %e, "reading auto mode's state failed");
            return;
        }
    };
    if summary.under_attack == *attacked {
        return;
    }
    *attacked = summary.under_attack;
    let Some(sysctls) = sysctls else { return };
    let value = if summary.under_attack {
        info!(
            syn_rate = summary.syn_rate_pps,
            "SYN flood: answering with cookies"
        );
        "2"
    } else {
        info!(
            syn_rate = summary.syn_rate_pps,
            "SYN flood over: passing SYNs to the kernel"
        );
        sysctls.original(sysctl::SYNCOOKIES).unwrap_or("1")
    };
    if let Err(e) = sysctls.set(sysctl::SYNCOOKIES, value) {
        warn!(error = %e, "following auto mode with tcp_syncookies failed");
    }
}
