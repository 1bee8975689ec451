//! Loading synguard's XDP program and attaching it to an interface.
//!
//! The attachment is a BPF link. Pinned (the default), it outlives this process on purpose:
//! a crash or a handover leaves the program answering, and the next start takes it over;
//! [`Attachment::detach`] removes it. Unpinned (`--no-pin`), it is owned by this process and
//! goes when the process does. Either way a failed attach leaves nothing new behind.

use std::{
    error::Error as StdError,
    io,
    sync::{Arc, Mutex},
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        ProgramError, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use clap::ValueEnum;
use synguard_common::{Config, Mode, PINNED_MAPS, PROGRAM_NAME};
use tracing::{debug, warn};

use crate::{
    Error,
    config::settings::Settings,
    datapath::attack::AttackEvents,
    datapath::handshakes::HandshakeMaps,
    datapath::maps::{ControlMaps, FactsMaps, ListMaps, SourceBuckets, StatsMap},
    datapath::objects,
    datapath::owners::OwnersKeeper,
    datapath::pins::PinDir,
    host::facts::HostPoller,
    host::preflight,
    sync::lock,
};

/// synguard's program, attached to one interface.
pub struct Attachment {
    // Owns the program and its link; dropping it detaches.
    ebpf: Ebpf,
    stats: Arc<StatsMap>,
    handshakes: Arc<Mutex<HandshakeMaps>>,
    control: Arc<Mutex<ControlMaps>>,
    lists: Arc<Mutex<ListMaps>>,
    events: Option<AttackEvents>,
    buckets: Arc<SourceBuckets>,
    /// What the SYN-ACKs' promises are made of, and the poller that keeps the host's current.
    facts: FactsMaps,
    host: HostPoller,
    /// The XDP link, when pinned (otherwise the program owns it).
    link: Option<FdLink>,
    /// The tracing program and the rebuilds of the owner filter; without them the fast path
    /// stays off.
    owners: Option<OwnersKeeper>,
    pins: Option<PinDir>,
    adopted: bool,
    iface: String,
    mode: AttachMode,
    program_id: u32,
}

impl Attachment {
    /// Loads the program and attaches it to `iface` in `mode`, passing everything (mode
    /// `off`) until [`Attachment::configure`] says otherwise: attaching can fail, and nothing
    /// else should change before it has succeeded. Never falls back to another XDP mode: the
    /// operator asked for this one. With `pins`, the link and maps are pinned there; if a
    /// previous controller left them, the new program takes the link over atomically and
    /// keeps the maps, their state and the configuration in force, so protection never
    /// pauses. On failure nothing new is left behind (an adopted program keeps running).
    pub fn attach(
        iface: &str,
        mode: AttachMode,
        settings: &Settings,
        pins: Option<PinDir>,
    ) -> Result<Self, Error> {
        let adopting = pins.as_ref().is_some_and(PinDir::has_link);
        if let Some(pins) = &pins {
            pins.create()?;
        }
        let attached = Self::attach_inner(iface, mode, settings, pins.clone(), adopting);
        if attached.is_err()
            && !adopting
            && let Some(pins) = &pins
        {
            pins.remove();
        }
        attached
    }

    fn attach_inner(
        iface: &str,
        mode: AttachMode,
        settings: &Settings,
        pins: Option<PinDir>,
        adopting: bool,
    ) -> Result<Self, Error> {
        let if_index = preflight::interface_index(iface)?;
        let mut loader = EbpfLoader::new();
        if let Some(pins) = &pins {
            for name in PINNED_MAPS {
                loader.map_pin_path(name, pins.map(name));
            }
        }
        let mut ebpf = loader.load(objects::SYNGUARD).map_err(|e| load_error(&e))?;
        let stats = Arc::new(StatsMap::take(&mut ebpf)?);
        let handshakes = Arc::new(Mutex::new(HandshakeMaps::take(&mut ebpf)?));
        let mut control = ControlMaps::take(&mut ebpf)?;
        let lists = ListMaps::take(&mut ebpf)?;
        let events = AttackEvents::take(&mut ebpf)?;
        let buckets = Arc::new(SourceBuckets::take(&mut ebpf)?);
        // Before the program runs: with no layout or host facts it would leave every SYN to
        // the kernel.
        let (facts, host) = FactsMaps::take_filled(&mut ebpf, iface)?;
        if !adopting {
            // A fresh attachment passes everything until `configure`; an adopted one keeps
            // the configuration in force, which is in the maps it keeps.
            control.set_config(&Config {
                mode: Mode::Off as u32,
                ..settings.config
            })?;
        }
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| Error::Other(format!("program {PROGRAM_NAME} missing from the object")))?
            .try_into()
            .map_err(|e: ProgramError| Error::Other(e.to_string()))?;
        program.load().map_err(|e| load_error(&e))?;
        let link_id = match &pins {
            Some(pins) if adopting => {
                let pinned = PinnedLink::from_pin(pins.link()).map_err(|e| {
                    Error::Other(format!(
                        "cannot open the pinned link {}: {e}",
                        pins.link().display()
                    ))
                })?;
                let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| {
                    Error::Other(format!("{} is not an XDP link: {e}", pins.link().display()))
                })?;
                program
                    .attach_to_link(link)
                    .map_err(|e| Error::Other(format!("taking over the pinned link failed: {e}")))?
            }
            _ => program
                .attach_to_if_index(if_index, mode.xdp_mode())
                .map_err(|e| attach_error(iface, mode, &e))?,
        };
        let program_id = program
            .info()
            .map(|info| info.id())
            .map_err(|e| Error::Other(format!("reading the program's id failed: {e}")))?;
        let link = match &pins {
            None => None,
            Some(pins) => {
                let link = program
                    .take_link(link_id)
                    .map_err(|e| Error::Other(e.to_string()))?;
                let link = FdLink::try_from(link).map_err(|_| {
                    Error::Other(
                        "this kernel attached XDP by netlink, which cannot be pinned; run with \
                         --no-pin (protection then stops when synguard does)"
                            .to_string(),
                    )
                })?;
                if adopting {
                    Some(link)
                } else {
                    let pinned = link.pin(pins.link()).map_err(|e| {
                        Error::Other(format!(
                            "pinning the link at {} failed: {e}",
                            pins.link().display()
                        ))
                    })?;
                    Some(FdLink::from(pinned))
                }
            }
        };
        // After the XDP program is in place: until the keeper arms it, the program looks every
        // SYN up, as it always could.
        let owners = match OwnersKeeper::start(&mut ebpf, pins.as_ref()) {
            Ok(keeper) => Some(keeper),
            Err(e) => {
                warn!(
                    "the fast path stays off, so every SYN to a protected port gets the socket \
                     lookup (protection is unchanged): {e}"
                );
                None
            }
        };
        Ok(Self {
            ebpf,
            owners,
            stats,
            handshakes,
            control: Arc::new(Mutex::new(control)),
            lists: Arc::new(Mutex::new(lists)),
            events: Some(events),
            buckets,
            facts,
            host,
            link,
            pins,
            adopted: adopting,
            iface: iface.to_string(),
            mode,
            program_id,
        })
    }

    /// Whether this run took over a program a previous run left attached.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Whether the fast path is on: the owner filter is built and kept.
    pub fn fast_path(&self) -> bool {
        self.owners.as_ref().is_some_and(OwnersKeeper::armed)
    }

    /// Rebuilds the owner filter now rather than at its next turn.
    pub fn rebuild_owner_filter_soon(&self) {
        if let Some(owners) = &self.owners {
            owners.rebuild_soon();
        }
    }

    /// The same, as a flag that follows it, for the metrics.
    pub fn fast_path_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        match &self.owners {
            Some(owners) => owners.armed_flag(),
            None => Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    pub fn buckets(&self) -> Arc<SourceBuckets> {
        Arc::clone(&self.buckets)
    }

    pub fn stats(&self) -> Arc<StatsMap> {
        Arc::clone(&self.stats)
    }

    /// The handshake counters per port, shared with the metrics.
    pub fn handshakes(&self) -> Arc<Mutex<HandshakeMaps>> {
        Arc::clone(&self.handshakes)
    }

    /// Turns off a dump whose `synguard dump` process died (kill -9) without doing so: its
    /// budget ran out a refill after, but its filters would still be read on every packet.
    /// Says whether it did.
    pub fn end_abandoned_dump(&mut self) -> Result<bool, Error> {
        use synguard_common::dump::{DUMP_CONFIG_MAP, DumpConfig};
        let map = self
            .ebpf
            .map_mut(DUMP_CONFIG_MAP)
            .ok_or_else(|| Error::Other(format!("map {DUMP_CONFIG_MAP} missing")))?;
        let mut config: aya::maps::Array<_, DumpConfig> =
            aya::maps::Array::try_from(map).map_err(|source| Error::Map {
                map: DUMP_CONFIG_MAP,
                source,
            })?;
        let running = config.get(&0, 0).map_err(|source| Error::Map {
            map: DUMP_CONFIG_MAP,
            source,
        })?;
        if running.session == 0 || crate::datapath::dump::process_alive(running.owner_pid) {
            return Ok(false);
        }
        config
            .set(0, DumpConfig::default(), 0)
            .map_err(|source| Error::Map {
                map: DUMP_CONFIG_MAP,
                source,
            })?;
        Ok(true)
    }

    /// Gives the protected ports that have a listener their own row of handshake counters,
    /// as listeners appear.
    pub fn follow_listeners(&self) -> Result<(), Error> {
        let listening = crate::host::listeners::listening_ports()?;
        let control = lock(&self.control);
        let mut protected = Vec::new();
        for port in listening {
            if control.protects(port)? {
                protected.push(port);
            }
        }
        drop(control);
        lock(&self.handshakes).give_rows(protected)
    }

    /// Writes `settings` into the program's maps; the next packet sees them.
    pub fn configure(&self, settings: &Settings) -> Result<(), Error> {
        let mut control = lock(&self.control);
        if let Some(ports) = &settings.ports {
            control.set_ports(ports)?;
        }
        control.set_config(&settings.config)?;
        drop(control);
        // A mode that passed a flood's SYNs (off, monitor, auto when calm) noted their
        // sources; a new configuration may answer them, without the lookup once forgotten.
        self.rebuild_owner_filter_soon();
        lock(&self.lists).load(&settings.lists)
    }

    /// Gathers the host's facts again and hands them to the program if they changed (a sysctl,
    /// the MTU, a route): its SYN-ACKs follow from the next SYN on. Returns whether they did.
    pub fn follow_host(&mut self) -> Result<bool, Error> {
        match self.host.poll(&self.iface)? {
            Some(current) => {
                self.facts.set_snapshot(&current)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The host's facts in force, as the program sees them.
    pub fn host_facts(&self) -> Result<synguard_common::promise::HostFacts, Error> {
        self.facts.host()
    }

    /// The attack events and sampled sources, for the one task that follows them.
    pub fn take_events(&mut self) -> Option<AttackEvents> {
        self.events.take()
    }

    /// The allow/deny lists, for run-time changes.
    pub fn lists(&self) -> Arc<Mutex<ListMaps>> {
        Arc::clone(&self.lists)
    }

    /// The configuration and ports maps, for run-time changes; shared with the metrics.
    pub fn control(&self) -> Arc<Mutex<ControlMaps>> {
        Arc::clone(&self.control)
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// The kernel's id for the loaded program, as `bpftool prog show` lists it.
    pub fn program_id(&self) -> u32 {
        self.program_id
    }

    /// Detaches the program and unloads it.
    /// Whether the program stays attached after this process exits (its link is pinned).
    pub fn pinned(&self) -> Option<&PinDir> {
        self.pins.as_ref()
    }

    /// Exits leaving the program attached through its pinned link, for the next start to take
    /// over; without pins this is `detach`.
    pub fn leave(self) {
        if self.pins.is_none() {
            return self.detach();
        }
        drop(self.owners);
        drop(self.link);
        drop(self.ebpf);
    }

    /// Detaches: removes the pins, then closes the links and the program.
    pub fn detach(self) {
        if let Some(pins) = &self.pins {
            pins.remove();
        }
        drop(self.owners);
        drop(self.link);
        drop(self.ebpf);
    }
}

/// How the program is attached: the operator's choice, never changed behind their back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AttachMode {
    /// Driver (native) XDP.
    Native,
    /// Generic XDP, in the kernel's network stack.
    Skb,
}

impl AttachMode {
    fn xdp_mode(self) -> XdpMode {
        match self {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Skb => "skb",
        }
    }
}

/// The first OS error code in an error's chain of sources.
fn errno(err: &(dyn StdError + 'static)) -> Option<i32> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(code) = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            return Some(code);
        }
        current = e.source();
    }
    None
}

fn load_error(err: &(dyn StdError + 'static)) -> Error {
    if errno(err) == Some(libc_errno::EPERM) {
        return Error::MissingCapabilities {
            missing: "the privilege to load BPF programs".to_string(),
        };
    }
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(ProgramError::LoadError {
            io_error,
            verifier_log,
        }) = e.downcast_ref::<ProgramError>()
        {
            let verifier_log = verifier_log.to_string();
            debug!(%verifier_log, "verifier log");
            return Error::Load {
                message: io_error.to_string(),
                verifier_log,
            };
        }
        current = e.source();
    }
    Error::Load {
        message: chain(err),
        verifier_log: String::new(),
    }
}

fn attach_error(iface: &str, mode: AttachMode, err: &ProgramError) -> Error {
    match errno(err) {
        // net/core/dev.c, dev_xdp_attach(): EBUSY when a program or link is already attached
        // in this mode ("Can't replace active BPF XDP link"), EEXIST when one is attached in
        // the other mode ("Native and generic XDP can't be active at the same time").
        Some(libc_errno::EBUSY | libc_errno::EEXIST) => Error::AlreadyAttached {
            iface: iface.to_string(),
        },
        // Same function: "Underlying driver does not support XDP in native mode".
        Some(libc_errno::EOPNOTSUPP) if mode == AttachMode::Native => Error::NativeXdpUnsupported {
            iface: iface.to_string(),
        },
        Some(libc_errno::EPERM) => Error::MissingCapabilities {
            missing: "the privilege to attach XDP programs (CAP_NET_ADMIN)".to_string(),
        },
        _ => Error::Attach {
            iface: iface.to_string(),
            mode: mode.name(),
            source: io::Error::other(chain(err)),
        },
    }
}

/// An error and its sources on one line.
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        text.push_str(": ");
        text.push_str(&e.to_string());
        current = e.source();
    }
    text
}

/// The errno values we tell apart, from nix so no raw numbers appear here.
mod libc_errno {
    use nix::errno::Errno;
    pub const EPERM: i32 = Errno::EPERM as i32;
    pub const EBUSY: i32 = Errno::EBUSY as i32;
    pub const EEXIST: i32 = Errno::EEXIST as i32;
    pub const EOPNOTSUPP: i32 = Errno::EOPNOTSUPP as i32;
}
