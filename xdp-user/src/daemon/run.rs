//! `synguard run`: check, configure, attach to every interface named, serve metrics and follow
//! `auto` mode until told to stop; then detach and put the sysctls back. Each interface has a
//! loop of its own (control socket, attack events, ticks); the main loop takes the signals and
//! passes them on.

use std::{
    ffi::OsString,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use synguard_common::{AttackEvent, Mode, config::event};
use tokio::{
    net::{TcpListener, UnixListener},
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot, watch},
    time::MissedTickBehavior,
};
use tracing::{debug, info, warn};

use crate::{
    Error,
    cli::{RunArgs, Startup, config_file},
    config::settings::Settings,
    control::{
        self,
        protocol::{Detached, Reply, Request, Response},
    },
    daemon::{
        config_watch::ConfigWatch,
        follow::{AutoFollower, Live},
        instance::Instance,
    },
    datapath::loader::Attachment,
    datapath::pins::{InterfaceLock, NamespaceLock, PinDir},
    host::facts,
    host::preflight,
    host::sysctl::NamespaceSysctls,
    telemetry::events::{Event, Events},
    telemetry::metrics,
};

/// How often the sources sampled during an attack are read: often enough that a CPU's ring of
/// 64 rarely wraps unread at moderate rates, and the newest samples count when it does.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How often new listening ports get their own handshake counters.
const LISTENERS_EVERY: Duration = Duration::from_secs(1);
/// How often the baseline of a relative threshold is fed.
const BASELINE_EVERY: Duration = Duration::from_secs(1);

/// `argv` is the command line `args` came from: SIGHUP parses it again over the re-read file.
pub async fn run(args: &RunArgs, argv: &[OsString]) -> Result<(), Error> {
    // Everything that can fail without side effects comes first, so a bad invocation leaves the
    // interfaces as it found them.
    preflight::check_capabilities()?;
    let ifaces = interfaces(&args.iface)?;
    let (file, required) = config_file::config_path(argv);
    let each = per_interface(argv, &config_file::read(&file, required)?, &ifaces)?;
    let settings = ifaces
        .iter()
        .zip(&each)
        .map(|(iface, own)| {
            Settings::derive(
                &own.tunables(),
                &own.list_sources(),
                args.cookie_timestamps,
                iface,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
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

    // The interfaces' locks first: a second synguard on the same interface hears about that
    // interface, one on another interface of the namespace about the namespace.
    let mut locks = Vec::new();
    for iface in &ifaces {
        locks.push(InterfaceLock::take(&args.state_dir, iface)?);
    }
    let _netns_lock = NamespaceLock::take(&args.state_dir, &ifaces)?;
    let mut pins = Vec::new();
    for iface in &ifaces {
        let dir = PinDir::for_iface(&args.bpffs, iface)?;
        if args.no_pin && dir.has_link() {
            return Err(Error::PinnedButNoPin {
                iface: iface.clone(),
                pins: dir.path.clone(),
            });
        }
        pins.push((!args.no_pin).then_some(dir));
    }

    // Attached passing everything first (attaching is what fails on a busy or unfit
    // interface); then the sysctls that make cookies valid; then the mode that sends them. A
    // failure on one interface undoes what was done on the others.
    let sysctls = NamespaceSysctls::new(&args.state_dir);
    let mut attachments: Vec<Attachment> = Vec::new();
    if let Err(e) = attach_all(args, &each, pins, &settings, &sysctls, &mut attachments) {
        for attachment in attachments {
            undo(attachment);
        }
        let _ = sysctls.restore();
        return Err(e);
    }

    let mut guards = Vec::new();
    for ((mut attachment, lock), own) in attachments.into_iter().zip(locks).zip(&each) {
        let socket = control::socket_path(&args.state_dir, attachment.iface());
        let control_listener = control::bind(&socket)?;
        let counters = Arc::new(Events::default());
        let events = attachment
            .take_events()
            .ok_or_else(|| Error::Other("the attack events were taken twice".into()))?;
        let follower = AutoFollower::new(
            own.mode == Mode::Auto,
            Arc::clone(&counters),
            events,
            own.auto_threshold,
            own.auto_threshold_min,
            Duration::from_secs(own.auto_baseline_secs),
        );
        let claim = sysctls.claim(attachment.iface());
        let mut instance = Instance {
            tunables: own.tunables(),
            cookie_timestamps: args.cookie_timestamps,
            attachment,
            sysctls: claim,
            follower,
            started: Instant::now(),
            events: counters,
        };
        if instance.attachment.adopted() {
            let plant = Live {
                attachment: &instance.attachment,
                sysctls: &instance.sysctls,
            };
            instance.follower.resume(&plant);
        }
        guards.push(Guard {
            instance,
            control_listener,
            socket,
            _lock: lock,
        });
    }
    let registry = metrics::registry(
        &guards
            .iter()
            .map(|g| (&g.instance.attachment, Arc::clone(&g.instance.events)))
            .collect::<Vec<_>>(),
    )?;
    info!("serving metrics on http://{}/metrics", args.metrics_addr);

    let (stop_server, server_stopped) = oneshot::channel::<()>();
    let mut server = tokio::spawn(metrics::serve(listener, registry, async {
        let _ = server_stopped.await;
    }));
    let (orders, order) = watch::channel(Order::Run);
    let startup = args.startup();
    let mut config_watch = match args.no_config_watch {
        true => None,
        false => ConfigWatch::new(watched_files(config_file::config_path(argv).0, &each))
            .map_err(|e| warn!(error = %e, "config changes will apply on SIGHUP only: watching the config file failed"))
            .ok(),
    };
    let guarding = join_all(guards.into_iter().map(|guard| guard.serve(order.clone())));
    tokio::pin!(guarding);
    let mut outcome: Result<&'static str, Error> = Ok("every interface was detached");
    let mut server_running = true;
    let stop = |why| {
        orders.send_replace(Order::Stop(why));
    };
    let handed_over = loop {
        tokio::select! {
            endings = &mut guarding => break endings.contains(&true),
            _ = sigint.recv() => { outcome = Ok("SIGINT"); stop("SIGINT") }
            _ = sigterm.recv() => { outcome = Ok("SIGTERM"); stop("SIGTERM") }
            _ = sigquit.recv() => { outcome = Ok("SIGQUIT"); stop("SIGQUIT") }
            _ = sighup.recv() => {
                let reread = reread(argv, &startup, "SIGHUP");
                follow_files(&mut config_watch, &reread);
                orders.send_replace(Order::Reload(Arc::new(reread)));
            }
            () = changed(&mut config_watch) => {
                let reread = reread(argv, &startup, "the file changed");
                follow_files(&mut config_watch, &reread);
                orders.send_replace(Order::Reload(Arc::new(reread)));
            }
            served = &mut server, if server_running => {
                server_running = false;
                let why = served.map_or_else(
                    |e| e.to_string(),
                    |r| r.err().map_or("no error".into(), |e| e.to_string()),
                );
                outcome = Err(server_down(&why));
                stop("the metrics server stopped");
            }
        }
    };
    if let Ok(signal) = &outcome {
        info!(signal, "shutting down");
    }
    let _ = stop_server.send(());
    if server_running {
        let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    }
    // A handover leaves the sysctls as they are, for the next start; otherwise the last
    // interface to leave has restored them already, and this is only a safety net.
    match handed_over {
        true => sysctls.keep(),
        false => sysctls.restore()?,
    }
    outcome.map(|_| ())
}

/// The interfaces named, each once, each one that exists.
fn interfaces(named: &[String]) -> Result<Vec<String>, Error> {
    let mut ifaces: Vec<String> = Vec::new();
    for iface in named {
        if ifaces.contains(iface) {
            return Err(Error::InterfaceTwice {
                iface: iface.clone(),
            });
        }
        preflight::interface_index(iface)?;
        ifaces.push(iface.clone());
    }
    Ok(ifaces)
}

/// Attaches every interface (passing, pinned in `pins` unless `None`), joins the sysctls its
/// mode needs, then configures each; `each` is each interface's arguments, their own table of
/// the config file over the rest. What was attached so far is left in `attachments` for the
/// caller to undo on error.
fn attach_all(
    args: &RunArgs,
    each: &[RunArgs],
    pins: Vec<Option<PinDir>>,
    settings: &[Settings],
    sysctls: &NamespaceSysctls,
    attachments: &mut Vec<Attachment>,
) -> Result<(), Error> {
    for ((iface, pins), settings) in args.iface.iter().zip(pins).zip(settings) {
        let attachment = Attachment::attach(iface, args.xdp_mode, settings, pins)?;
        if attachment.adopted() {
            info!(
                %iface,
                "took over the program a previous run left attached: protection never paused"
            );
        }
        attachments.push(attachment);
    }
    for (iface, own) in args.iface.iter().zip(each) {
        if matches!(own.mode, Mode::Cookie | Mode::Auto) {
            let claim = sysctls.claim(iface);
            claim.join(args.cookie_timestamps)?;
            // Cookie mode needs tcp_syncookies=2 for good; auto only during an attack. Until
            // then the kernel keeps the operator's setting: with 2 it would answer every SYN
            // it gets with a cookie of its own, and clients without timestamps would lose
            // window scaling and SACK.
            claim.cookies(own.mode == Mode::Cookie)?;
        }
    }
    for ((attachment, settings), args) in attachments.iter_mut().zip(settings).zip(each) {
        // The host's facts as the sysctls now are (tcp_timestamps=2 above), before the mode
        // that answers SYNs: a poll later, the first SYNs would go to the kernel.
        attachment.follow_host()?;
        attachment.configure(settings)?;
        // Listening ports get their handshake counters from the first SYN on; the loop keeps
        // up with new listeners. Not being able to tell costs labels, not protection.
        if let Err(e) = attachment.follow_listeners() {
            warn!(error = %e, "reading the listening ports failed; handshakes count as port=\"other\"");
        }
        info!(
            iface = %attachment.iface(),
            xdp_mode = args.xdp_mode.name(),
            mode = args.mode.name(),
            ports = %args.ports.as_ref().map_or("every port with a listener".to_string(), |p| p.to_string()),
            allowed = settings.lists.allow.len(),
            denied = settings.lists.deny.len(),
            syn_rate_per_source = args.syn_rate_per_source,
            program_id = attachment.program_id(),
            "attached"
        );
        if let Some(pins) = attachment.pinned() {
            pins.warn_if_they_die_with_the_process();
        }
    }
    Ok(())
}

/// Undoes an attachment after a failed start: a program this run attached is detached; one it
/// took over is left as it was found, still protecting.
fn undo(attachment: Attachment) {
    match attachment.adopted() {
        true => attachment.leave(),
        false => attachment.detach(),
    }
}

/// What the main loop tells the interfaces' loops.
#[derive(Clone)]
enum Order {
    Run,
    Stop(&'static str),
    /// SIGHUP: the config file read again, with the command line and environment over it,
    /// or why it cannot apply.
    Reload(Arc<Reread>),
}

/// The configuration read again, from `file`, on SIGHUP or because it changed (`why`).
struct Reread {
    file: PathBuf,
    why: &'static str,
    /// Each interface's arguments, by interface.
    args: Result<Vec<(String, RunArgs)>, Error>,
}

/// One protected interface: its instance, control socket and lock.
struct Guard {
    instance: Instance,
    control_listener: UnixListener,
    socket: PathBuf,
    _lock: InterfaceLock,
}

impl Guard {
    /// Serves the interface's control socket and follows `auto` mode until told to stop or
    /// detached; then detaches, or leaves the program attached for the next start (SIGQUIT,
    /// when pinned). Says whether it was left attached.
    async fn serve(self, mut order: watch::Receiver<Order>) -> bool {
        let Guard {
            mut instance,
            control_listener,
            socket,
            _lock,
        } = self;
        let (request_tx, mut requests) = mpsc::channel::<control::Pending>(16);
        let control_server = tokio::spawn(control::serve(control_listener, request_tx));
        let mut sample_tick = tokio::time::interval(SAMPLE_EVERY);
        let mut baseline_tick = tokio::time::interval(BASELINE_EVERY);
        let mut host_tick = tokio::time::interval(facts::POLL_EVERY);
        let mut listeners_tick = tokio::time::interval(LISTENERS_EVERY);
        listeners_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        host_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The sample tick is idle between attacks: no catching up on the ticks it missed.
        sample_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        baseline_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let ending = loop {
            // What woke the loop is decided first and acted on after, so that the arms'
            // futures (one of which borrows the follower) are gone when it acts.
            let attacked = instance.follower.attacked();
            let wake = tokio::select! {
                changed = order.changed() => match changed {
                    Err(_) => Wake::Stop("shutdown"),
                    Ok(()) => match order.borrow_and_update().clone() {
                        Order::Run => Wake::Nothing,
                        Order::Stop(why) => Wake::Stop(why),
                        Order::Reload(args) => Wake::Reload(args),
                    },
                },
                Some((request, reply)) = requests.recv() => Wake::Control(request, reply),
                events = instance.follower.events().next() => Wake::Events(events),
                _ = sample_tick.tick(), if attacked => Wake::Sample,
                _ = baseline_tick.tick() => Wake::Baseline,
                _ = host_tick.tick() => Wake::Host,
                _ = listeners_tick.tick() => Wake::Listeners,
            };
            let plant = Live {
                attachment: &instance.attachment,
                sysctls: &instance.sysctls,
            };
            match wake {
                Wake::Nothing => {}
                Wake::Stop(why) => break why,
                Wake::Control(Request::Detach, reply) => {
                    let _ = reply.send(Response::ok(Reply::Detached(Detached { detached: true })));
                    break "a detach request";
                }
                Wake::Control(request, reply) => {
                    let _ = reply.send(instance.handle(request));
                }
                Wake::Events(Ok(events)) => {
                    // The flood's SYNs handed to the kernel before the switch noted their
                    // sources as possible owners: a rebuild now forgets those the kernel made
                    // no socket of, so the rest of the flood is answered without the lookup.
                    if events.iter().any(|e| e.kind == event::START) {
                        instance.attachment.rebuild_owner_filter_soon();
                    }
                    instance.follower.on_events(&events, &plant)
                }
                Wake::Events(Err(e)) => warn!(error = %e, "reading attack events failed"),
                Wake::Sample => instance.follower.on_sample_tick(&plant),
                Wake::Baseline => instance.follower.on_baseline_tick(&plant),
                Wake::Host => match instance.attachment.follow_host() {
                    Ok(true) => debug!(iface = instance.attachment.iface(), "host facts changed"),
                    Ok(false) => {}
                    Err(e) => warn!(error = %e, "reading the host's facts failed"),
                },
                Wake::Reload(args) => reload(&mut instance, &args),
                Wake::Listeners => {
                    if let Err(e) = instance.attachment.follow_listeners() {
                        warn!(error = %e, "reading the listening ports failed");
                    }
                    match instance.attachment.end_abandoned_dump() {
                        Ok(true) => info!(
                            iface = instance.attachment.iface(),
                            "turned off the capture of a `synguard dump` that died"
                        ),
                        Ok(false) => {}
                        Err(e) => warn!(error = %e, "checking for an abandoned dump failed"),
                    }
                }
            }
        };
        control_server.abort();
        let _ = std::fs::remove_file(&socket);

        let Instance {
            attachment,
            sysctls,
            ..
        } = instance;
        let iface = attachment.iface().to_string();
        // SIGQUIT hands over: protection stays on, pinned, with its sysctls, for the next
        // start (an upgrade, a restart) to take over without a gap.
        if let ("SIGQUIT", Some(pins)) = (ending, attachment.pinned()) {
            info!(
                %iface,
                pins = %pins.path.display(),
                "left attached for the next start to take over; sysctls left as they are"
            );
            attachment.leave();
            return true;
        }
        attachment.detach();
        info!(%iface, why = ending, "detached");
        if let Err(e) = sysctls.leave() {
            warn!(%iface, error = %e, "restoring the sysctls failed; the next start will retry");
        }
        false
    }
}

/// What woke an interface's loop.
enum Wake {
    Nothing,
    Stop(&'static str),
    Events(Result<Vec<AttackEvent>, Error>),
    Control(Request, oneshot::Sender<Response<Reply>>),
    Reload(Arc<Reread>),
    Sample,
    Baseline,
    /// Time to look at the host's facts again.
    Host,
    /// Time to give new listening ports their handshake counters, and to turn off the capture
    /// of a dump that died.
    Listeners,
}

/// The config file read again, with the command line and environment over it as at start;
/// refused whole if it changes what takes a restart.
fn reread(argv: &[OsString], startup: &Startup, why: &'static str) -> Reread {
    let (file, required) = config_file::config_path(argv);
    let args = config_file::read(&file, required).and_then(|read| {
        let shared = config_file::run_args(argv, &read.settings)?;
        if let Some(key) = startup.restart_needed(&shared.startup()) {
            return Err(Error::Refused(format!(
                "'{key}' changed; it takes a restart of synguard to apply"
            )));
        }
        let each = per_interface(argv, &read, &startup.iface)?;
        Ok(startup.iface.iter().cloned().zip(each).collect())
    });
    Reread { file, why, args }
}

/// Each interface's arguments: the command line and environment over the config file, with the
/// interface's own `[interface.NAME]` table over the file's top level.
fn per_interface(
    argv: &[OsString],
    file: &config_file::ConfigFile,
    ifaces: &[String],
) -> Result<Vec<RunArgs>, Error> {
    file.check_interfaces(ifaces).map_err(Error::Refused)?;
    ifaces
        .iter()
        .map(|iface| config_file::run_args(argv, &file.for_iface(iface)))
        .collect()
}

/// The files whose contents make the configuration: the config file and every interface's list
/// files, those that are files or not there yet (`/dev/null`, say, is no file to watch).
fn watched_files<'a>(config: PathBuf, each: impl IntoIterator<Item = &'a RunArgs>) -> Vec<PathBuf> {
    let mut files = vec![config];
    for args in each {
        files.extend(args.allow_file.iter().chain(&args.deny_file).cloned());
    }
    files.sort();
    files.dedup();
    files.retain(|file| std::fs::metadata(file).map_or(true, |m| m.is_file()));
    files
}

/// After a reread, the watch follows the files it named, from their contents now, so that the
/// change just read is not read again.
fn follow_files(config_watch: &mut Option<ConfigWatch>, reread: &Reread) {
    let (Some(config_watch), Ok(each)) = (config_watch, &reread.args) else {
        return;
    };
    config_watch.follow(watched_files(
        reread.file.clone(),
        each.iter().map(|(_, args)| args),
    ));
}

/// Resolves when a watched file's contents change; never without a watch.
async fn changed(config_watch: &mut Option<ConfigWatch>) {
    match config_watch {
        Some(config_watch) => config_watch.changed().await,
        None => std::future::pending().await,
    }
}

/// Puts a reloaded configuration in force on one interface; a bad file, or one that changes
/// what takes a restart, changes nothing.
fn reload(instance: &mut Instance, reread: &Reread) {
    let iface = instance.attachment.iface().to_string();
    let (file, why) = (reread.file.display(), reread.why);
    let own = reread.args.as_ref().map(|each| {
        each.iter()
            .find(|(name, _)| *name == iface)
            .map(|(_, args)| args)
    });
    let result = match own {
        Ok(Some(args)) => instance.reload(args.tunables(), &args.list_sources()),
        Ok(None) => Err(Error::Refused(format!(
            "{iface} is missing from the reread configuration"
        ))),
        Err(e) => Err(Error::Refused(e.to_string())),
    };
    match result {
        Ok(()) => info!(%iface, %file, why, "configuration reloaded"),
        Err(e) => {
            instance.events.record(Event::ConfigRefused);
            warn!(
                %iface,
                %file,
                why,
                error = %e,
                "configuration reload refused; the running configuration stays in force"
            )
        }
    }
}

fn server_down(why: &str) -> Error {
    Error::Other(format!("the metrics server stopped: {why}"))
}
