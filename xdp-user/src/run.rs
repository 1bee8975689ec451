//! `synguard run`: check, configure, attach, serve metrics and follow `auto` mode until told to
//! stop; then detach and put the sysctls back.

use std::{
    ffi::OsString,
    sync::Arc,
    time::{Duration, Instant},
};

use synguard_common::{AttackEvent, Mode};
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot},
    time::MissedTickBehavior,
};
use tracing::{info, warn};

use crate::{
    Error,
    cli::RunArgs,
    config_file,
    control::{self, Request, Response},
    daemon::Daemon,
    events::{Event, Events},
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
    let mut sighup = signal(SignalKind::hangup())
        .map_err(|e| Error::Other(format!("installing the SIGHUP handler failed: {e}")))?;

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
    let socket = control::socket_path(&args.state_dir, &args.iface);
    let control_listener = control::bind(&socket)?;
    let counters = Arc::new(Events::default());
    let registry = metrics::registry(&attachment, Arc::clone(&counters))?;
    info!("serving metrics on http://{}/metrics", args.metrics_addr);

    let (stop_server, server_stopped) = oneshot::channel::<()>();
    let mut server = tokio::spawn(metrics::serve(listener, registry, async {
        let _ = server_stopped.await;
    }));
    let (request_tx, mut requests) = mpsc::channel::<control::Pending>(16);
    let control_server = tokio::spawn(control::serve(control_listener, request_tx));
    let events = attachment
        .take_events()
        .ok_or_else(|| Error::Other("the attack events were taken twice".into()))?;
    let follower = AutoFollower::new(
        args.mode == Mode::Auto,
        Arc::clone(&counters),
        events,
        args.auto_threshold,
        args.auto_threshold_min,
        Duration::from_secs(args.auto_baseline_secs),
    );
    let mut daemon = Daemon {
        args: args.clone(),
        attachment,
        sysctls,
        follower,
        started: Instant::now(),
        events: counters,
    };
    if daemon.attachment.adopted() {
        daemon
            .follower
            .resume(&daemon.attachment, daemon.sysctls.as_ref());
    }
    let mut sample_tick = tokio::time::interval(SAMPLE_EVERY);
    let mut baseline_tick = tokio::time::interval(BASELINE_EVERY);
    // The sample tick is idle between attacks: no catching up on the ticks it missed.
    sample_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    baseline_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let outcome = loop {
        // What woke the loop is decided first and acted on after, so that the arms' futures
        // (one of which borrows the follower) are gone when it acts.
        let attacked = daemon.follower.attacked();
        let wake = tokio::select! {
            _ = sigint.recv() => Wake::Signal("SIGINT"),
            _ = sigterm.recv() => Wake::Signal("SIGTERM"),
            _ = sigquit.recv() => Wake::Signal("SIGQUIT"),
            _ = sighup.recv() => Wake::Reload,
            served = &mut server => Wake::ServerDown(
                served.map_or_else(|e| e.to_string(), |r| r.err().map_or("no error".into(), |e| e.to_string()))
            ),
            Some((request, reply)) = requests.recv() => Wake::Control(request, reply),
            events = daemon.follower.events().next() => Wake::Events(events),
            _ = sample_tick.tick(), if attacked => Wake::Sample,
            _ = baseline_tick.tick() => Wake::Baseline,
        };
        let (attachment, sysctls) = (&daemon.attachment, daemon.sysctls.as_ref());
        match wake {
            Wake::Signal(signal) => break Ok(signal),
            Wake::ServerDown(why) => break Err(server_down(&why)),
            Wake::Control(Request::Detach, reply) => {
                let _ = reply.send(Response::ok(serde_json::json!({"detached": true})));
                break Ok("a detach request");
            }
            Wake::Control(request, reply) => {
                let _ = reply.send(daemon.handle(request));
            }
            Wake::Events(Ok(events)) => daemon.follower.on_events(&events, attachment, sysctls),
            Wake::Events(Err(e)) => warn!(error = %e, "reading attack events failed"),
            Wake::Sample => daemon.follower.on_sample_tick(attachment, sysctls),
            Wake::Baseline => daemon.follower.on_baseline_tick(attachment),
            Wake::Reload => reload(&mut daemon),
        }
    };
    if let Ok(signal) = &outcome {
        info!(signal, "shutting down");
    }
    control_server.abort();
    let _ = std::fs::remove_file(&socket);
    let _ = stop_server.send(());
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;

    let Daemon {
        attachment,
        sysctls,
        ..
    } = daemon;
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
pub(crate) fn apply_sysctls(args: &RunArgs) -> Result<Option<Sysctls>, Error> {
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
    Control(Request, oneshot::Sender<Response>),
    Reload,
    Sample,
    Baseline,
}

/// SIGHUP: reads the config file again, with the command line and environment over it as at
/// start. A bad file changes nothing.
fn reload(daemon: &mut Daemon) {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let (path, required) = config_file::config_path(&argv);
    let result = config_file::read(&path, required)
        .and_then(|settings| config_file::run_args(&argv, &settings))
        .and_then(|args| daemon.reload(args));
    match result {
        Ok(()) => info!(file = %path.display(), "configuration reloaded"),
        Err(e) => {
            daemon.events.record(Event::ConfigRefused);
            warn!(
                file = %path.display(),
                error = %e,
                "configuration reload refused; the running configuration stays in force"
            )
        }
    }
}

fn server_down(why: &str) -> Error {
    Error::Other(format!("the metrics server stopped: {why}"))
}
