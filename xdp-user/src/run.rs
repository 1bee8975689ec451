//! `synguard run`: check, configure, attach, serve metrics and follow `auto` mode until told to
//! stop; then detach and put the sysctls back.

use std::time::Duration;

use synguard_common::{AttackEvent, Mode};
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
    sync::oneshot,
    time::MissedTickBehavior,
};
use tracing::{info, warn};

use crate::{
    Error,
    cli::RunArgs,
    follow::AutoFollower,
    loader::Attachment,
    metrics,
    pins::{InterfaceLock, PinDir},
    preflight,
    settings::Settings,
    sysctl::{self, Sysctls},
};

/// How often the sources sampled during an attack are read: often enough that a CPU's ring of
/// 64 rarely wraps unread at moderate rates, and the newest samples count when it does.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How often the baseline of a relative threshold is fed.
const BASELINE_EVERY: Duration = Duration::from_secs(1);

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
    let mut sigquit = signal(SignalKind::quit())
        .map_err(|e| Error::Other(format!("installing the SIGQUIT handler failed: {e}")))?;

    // Attached passing everything first (attaching is what fails on a busy or unfit
    // interface); then the sysctls that make cookies valid; then the mode that sends them.
    let _lock = InterfaceLock::take(&args.state_dir, &args.iface)?;
    let pins = PinDir::for_iface(&args.bpffs, &args.iface)?;
    if args.no_pin && pins.has_link() {
        return Err(Error::Other(format!(
            "a killed synguard left its program pinned at {} and still protecting {}; run \
             without --no-pin to take it over (or remove that directory to detach it)",
            pins.path.display(),
            args.iface
        )));
    }
    let pins = (!args.no_pin).then_some(pins);
    let mut attachment = Attachment::attach(&args.iface, args.xdp_mode, &settings, pins)?;
    if attachment.adopted() {
        info!(
            iface = %args.iface,
            "took over the program a previous run left attached: protection never paused"
        );
    }
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
    let mut follower = match (args.mode, attachment.take_events()) {
        (Mode::Auto, Some(events)) => Some(AutoFollower::new(
            events,
            args.auto_threshold,
            args.auto_threshold_min,
            Duration::from_secs(args.auto_baseline_secs),
        )),
        _ => None,
    };
    if let (true, Some(auto)) = (attachment.adopted(), follower.as_mut()) {
        auto.resume(&attachment, sysctls.as_ref());
    }
    let mut sample_tick = tokio::time::interval(SAMPLE_EVERY);
    let mut baseline_tick = tokio::time::interval(BASELINE_EVERY);
    // The sample tick is idle between attacks: no catching up on the ticks it missed.
    sample_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    baseline_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let attacked = |f: &Option<AutoFollower>| f.as_ref().is_some_and(AutoFollower::attacked);
    let outcome = loop {
        // What woke the loop is decided first and acted on after, so that the arms' futures
        // (one of which borrows the follower) are gone when it acts.
        let wake = tokio::select! {
            _ = sigint.recv() => Wake::Signal("SIGINT"),
            _ = sigterm.recv() => Wake::Signal("SIGTERM"),
            _ = sigquit.recv() => Wake::Signal("SIGQUIT"),
            served = &mut server => Wake::ServerDown(
                served.map_or_else(|e| e.to_string(), |r| r.err().map_or("no error".into(), |e| e.to_string()))
            ),
            events = next_events(&mut follower) => Wake::Events(events),
            _ = sample_tick.tick(), if attacked(&follower) => Wake::Sample,
            _ = baseline_tick.tick(), if follower.is_some() => Wake::Baseline,
        };
        let Some(auto) = follower.as_mut() else {
            match wake {
                Wake::Signal(signal) => break Ok(signal),
                Wake::ServerDown(why) => break Err(server_down(&why)),
                _ => continue,
            }
        };
        match wake {
            Wake::Signal(signal) => break Ok(signal),
            Wake::ServerDown(why) => break Err(server_down(&why)),
            Wake::Events(Ok(events)) => auto.on_events(&events, &attachment, sysctls.as_ref()),
            Wake::Events(Err(e)) => warn!(error = %e, "reading attack events failed"),
            Wake::Sample => auto.on_sample_tick(&attachment, sysctls.as_ref()),
            Wake::Baseline => auto.on_baseline_tick(&attachment),
        }
    };
    if let Ok(signal) = &outcome {
        info!(signal, "shutting down");
    }
    let _ = stop_server.send(());
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;

    let iface = attachment.iface().to_string();
    // SIGQUIT hands over: protection stays on, pinned, with its sysctls, for the next start
    // (an upgrade, a restart) to take over without a gap.
    if let (Ok("SIGQUIT"), Some(pins)) = (&outcome, attachment.pinned()) {
        info!(
            %iface,
            pins = %pins.path.display(),
            "left attached for the next start to take over; sysctls left as they are"
        );
        attachment.leave();
        if let Some(sysctls) = sysctls {
            sysctls.keep();
        }
        return Ok(());
    }
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

/// What woke `run`'s loop.
enum Wake {
    Signal(&'static str),
    ServerDown(String),
    Events(Result<Vec<AttackEvent>, Error>),
    Sample,
    Baseline,
}

/// The data path's next attack events; never, outside `auto` mode.
async fn next_events(follower: &mut Option<AutoFollower>) -> Result<Vec<AttackEvent>, Error> {
    match follower {
        Some(follower) => follower.events().next().await,
        None => std::future::pending().await,
    }
}

fn server_down(why: &str) -> Error {
    Error::Other(format!("the metrics server stopped: {why}"))
}
