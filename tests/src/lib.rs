//! What the integration tests in `tests/` share: synguard's XDP program loaded (not attached)
//! and run in the kernel on a frame with BPF_PROG_TEST_RUN. The tests themselves live in
//! `tests/`.
//!
//! `model` is the reference model of synguard's decisions, and `differential` runs generated
//! frames through the program and the model side by side.

pub mod differential;
pub mod model;

use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, Xdp},
};
use std::net::TcpListener;

use synguard::datapath::{
    maps::{ControlMaps, FactsMaps, ListMaps, StatsMap},
    owners::OwnersKeeper,
};
use synguard_common::{Action, Class, Config, PROGRAM_NAME, Reason, SOURCES_MAP, Stats};

/// XDP return codes, as `Outcome::code` holds them.
pub const XDP_DROP: u32 = Action::Drop.xdp_code();
pub const XDP_PASS: u32 = Action::Pass.xdp_code();
pub const XDP_TX: u32 = Action::Tx.xdp_code();

/// synguard's program, loaded with its maps taken out for the test to read and write.
pub struct InKernel {
    ebpf: Ebpf,
    pub stats: StatsMap,
    pub control: ControlMaps,
    pub lists: ListMaps,
    /// The kernel layout and the host's facts, gathered for the namespace's interface.
    pub facts: FactsMaps,
    /// The owner filter, kept as the controller keeps it (its tracing program attached, rebuilt
    /// from this namespace's socket table): the fast path is on, as in production.
    pub owners: OwnersKeeper,
}

/// One run: the XDP code, the frame as it came out, and the counters before and after.
pub struct Outcome {
    pub code: u32,
    pub frame: Vec<u8>,
    pub before: Stats,
    pub after: Stats,
}

impl Outcome {
    /// The decisions counted by this run, in `Reason` order.
    pub fn reasons(&self) -> Vec<Reason> {
        Reason::ALL
            .into_iter()
            .flat_map(|r| {
                let n = self.after.reason(r) - self.before.reason(r);
                std::iter::repeat_n(r, n as usize)
            })
            .collect()
    }

    /// The (class, action) cells this run counted a packet in.
    pub fn counted(&self) -> Vec<(Class, Action)> {
        Class::ALL
            .into_iter()
            .flat_map(|c| Action::ALL.map(|a| (c, a)))
            .flat_map(|(c, a)| {
                let n = self.after.packets(c, a) - self.before.packets(c, a);
                std::iter::repeat_n((c, a), n as usize)
            })
            .collect()
    }
}

impl InKernel {
    /// Loads the program with `config` in its config map (`Config` all zeroes is mode `off`),
    /// and the host's facts as the controller gathers them for this namespace's interface
    /// (the first that is not loopback; reading it changes nothing). Fails loudly without
    /// root: these tests never skip themselves.
    pub fn load(config: &Config) -> InKernel {
        synguard_lab::require_root().unwrap();
        let mut ebpf =
            Ebpf::load(synguard::datapath::objects::SYNGUARD).expect("loading the object");
        let (facts, _) =
            FactsMaps::take_filled(&mut ebpf, &namespace_interface()).expect("the host's facts");
        let stats = StatsMap::take(&mut ebpf).expect("stats map");
        let mut control = ControlMaps::take(&mut ebpf).expect("control maps");
        control.set_config(config).expect("config");
        let lists = ListMaps::take(&mut ebpf).expect("list maps");
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .expect("program in object")
            .try_into()
            .expect("an XDP program");
        program.load().expect("the verifier accepts the program");
        let owners = OwnersKeeper::start(&mut ebpf, None).expect("the owner filter");
        let armed_by = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !owners.armed() {
            assert!(
                std::time::Instant::now() < armed_by,
                "the owner filter was not built within 5 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        InKernel {
            ebpf,
            stats,
            control,
            lists,
            facts,
            owners,
        }
    }

    /// Rebuilds the owner filter now from the socket table, as the controller does every few
    /// seconds, and waits for it.
    pub fn rebuild_owners(&self) {
        self.owners.rebuild_now();
    }

    /// One generation of the owner filter, as it is now.
    pub fn owner_bits(&self, generation: u32) -> synguard_common::owners::OwnerBits {
        self.owners.bits(generation)
    }

    /// How many instructions the verifier walked to accept the program (bpf_prog_info's
    /// `verified_insns`, Linux 5.16), of its budget of one million (BPF_COMPLEXITY_LIMIT_INSNS,
    /// include/linux/bpf.h).
    pub fn verified_instructions(&self) -> u32 {
        let program: &Xdp = self.ebpf.program(PROGRAM_NAME).unwrap().try_into().unwrap();
        program
            .info()
            .expect("the program's info")
            .verified_instruction_count()
            .expect("verified_insns (Linux 5.16)")
    }

    /// The per-source buckets (`SOURCES_MAP`), taken out for the test to set a source's state.
    pub fn take_source_buckets(
        &mut self,
    ) -> aya::maps::HashMap<aya::maps::MapData, synguard_common::limit::SourceKey, u64> {
        let map = self.ebpf.take_map(SOURCES_MAP).expect("the buckets map");
        aya::maps::HashMap::try_from(map).expect("a hash map")
    }

    /// The connections each CPU remembers as established (`established.rs`), with the uses
    /// each has left: the entries of every CPU that ever learned one.
    pub fn known_connections(&self) -> Vec<synguard_common::established::KnownConnection> {
        use synguard_common::established::{ESTABLISHED_MAP, KnownConnection, SLOTS};
        let map = self.ebpf.map(ESTABLISHED_MAP).expect("the connections map");
        let map: aya::maps::PerCpuArray<_, KnownConnection> =
            aya::maps::PerCpuArray::try_from(map).expect("a per-CPU array");
        (0..SLOTS)
            .flat_map(|slot| {
                map.get(&slot, 0)
                    .expect("a slot")
                    .iter()
                    .copied()
                    .collect::<Vec<_>>()
            })
            .filter(|entry| entry.key != [0; 5])
            .collect()
    }

    /// Runs the program once on a fresh copy of `frame`.
    pub fn run(&mut self, frame: &[u8]) -> Outcome {
        let before = self.stats.read().unwrap();
        let mut out = vec![0u8; frame.len() + 256];
        let program: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .unwrap()
            .try_into()
            .unwrap();
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(result.data_size_out as usize);
        Outcome {
            code: result.return_value,
            frame: out,
            before,
            after: self.stats.read().unwrap(),
        }
    }
}

/// The first interface of this thread's network namespace that is not loopback, or `lo`.
pub fn namespace_interface() -> String {
    nix::net::if_::if_nameindex()
        .expect("listing interfaces")
        .iter()
        .map(|i| i.name().to_string_lossy().into_owned())
        .find(|name| name != "lo")
        .unwrap_or_else(|| "lo".to_string())
}

/// A fresh lab whose server has tcp_syncookies=2 (the kernel answers every SYN that reaches
/// it with a cookie, and the stamping helper issues them) and tcp_timestamps=2, as synguard
/// sets them while it answers.
pub fn cookie_lab() -> synguard_lab::Lab {
    let lab = synguard_lab::Lab::new().unwrap();
    lab.server
        .set_sysctl("net.ipv4.tcp_syncookies", "2")
        .unwrap();
    lab.server
        .set_sysctl("net.ipv4.tcp_timestamps", "2")
        .unwrap();
    lab
}

/// TCP_INFO of a connected socket.
pub fn tcp_info(socket: &impl std::os::fd::AsRawFd) -> libc::tcp_info {
    // SAFETY: TCP_INFO fills at most `len` bytes of a zeroed, plain-data struct.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut _ as *mut libc::c_void,
            &mut len,
        );
        assert_eq!(rc, 0, "getsockopt(TCP_INFO)");
        info
    }
}

/// A listener on `port` of every address (IPv6: IPV6_V6ONLY), in the calling thread's
/// namespace, with `settings` ((level, option, value) for setsockopt) made before listen(),
/// as a server sets SO_RCVBUF, TCP_MAXSEG or IP_TOS on its listening socket.
pub fn listen_with(
    ipv6: bool,
    port: u16,
    settings: &[(i32, i32, i32)],
) -> std::io::Result<TcpListener> {
    use std::{
        io,
        os::fd::{AsRawFd, FromRawFd, OwnedFd},
    };
    let family = if ipv6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let set = |level: i32, name: i32, value: i32| -> io::Result<()> {
            let rc = libc::setsockopt(
                fd.as_raw_fd(),
                level,
                name,
                &value as *const i32 as *const libc::c_void,
                size_of::<i32>() as libc::socklen_t,
            );
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        set(libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        if ipv6 {
            set(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
        }
        for &(level, name, value) in settings {
            set(level, name, value)?;
        }
        let rc = if ipv6 {
            let mut addr: libc::sockaddr_in6 = std::mem::zeroed();
            addr.sin6_family = libc::AF_INET6 as u16;
            addr.sin6_port = port.to_be();
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        } else {
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as u16;
            addr.sin_port = port.to_be();
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc < 0 || libc::listen(fd.as_raw_fd(), 128) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(TcpListener::from(fd))
    }
}

/// Runs `body` on a thread in a fresh [`cookie_lab`] namespace with a dual-stack listener on
/// `port`: the cookie helpers look sockets up in the caller's namespace.
pub fn in_lab(port: u16, body: impl FnOnce() + Send) {
    let lab = cookie_lab();
    lab.server
        .enter(|| {
            let _listener = TcpListener::bind(("::", port)).unwrap();
            body();
        })
        .unwrap();
}

/// A bare SYN from `src` (IPv4 or IPv6) to the lab server's address (198.18.0.1 or
/// fd00:198:18::1) and `dst_port`, from `src_port`.
pub fn syn_from(src: std::net::IpAddr, src_port: u16, dst_port: u16) -> Vec<u8> {
    use etherparse::PacketBuilder;
    let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1]);
    let mut frame = Vec::new();
    let server_v6 = [0xfd, 0, 0x01, 0x98, 0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    match src {
        std::net::IpAddr::V4(a) => eth
            .ipv4(a.octets(), [198, 18, 0, 1], 64)
            .tcp(src_port, dst_port, 7, 64240)
            .syn()
            .write(&mut frame, &[]),
        std::net::IpAddr::V6(a) => eth
            .ipv6(a.octets(), server_v6, 64)
            .tcp(src_port, dst_port, 7, 64240)
            .syn()
            .write(&mut frame, &[]),
    }
    .expect("a SYN fits");
    frame
}

/// The synguard binary run with `args` (bounded to 20 s).
pub fn synguard_cli(args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(synguard_lab::synguard_bin().unwrap());
    cmd.args(args);
    synguard_lab::run_bounded(&mut cmd, std::time::Duration::from_secs(20)).unwrap()
}

/// `synguard status --json` of the synguard protecting `iface`.
pub fn status(iface: &str) -> serde_json::Value {
    serde_json::from_str(&succeeded(&synguard_cli(&[
        "status", "--json", "--iface", iface,
    ])))
    .expect("status --json prints JSON")
}

/// Polls [`status`] until `check` holds, for up to 3 s; the last reading either way.
pub fn status_until(iface: &str, check: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    for _ in 0..60 {
        let s = status(iface);
        if check(&s) {
            return s;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    status(iface)
}

/// The output of a command that must have succeeded, as text; its output in the panic if not.
pub fn succeeded(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Puts IPv6 extension headers between the fixed header and TCP of an IPv6 frame whose IP
/// header starts at `l3`: each `(next header value, bytes)`, the first byte of each set here
/// to what follows it; the fixed header's next header and payload length are fixed up.
pub fn insert_ipv6_extensions(frame: &mut Vec<u8>, l3: usize, headers: &[(u8, &[u8])]) {
    let mut next = frame[l3 + 6];
    let mut chain = Vec::new();
    for (kind, bytes) in headers.iter().rev() {
        let mut header = bytes.to_vec();
        header[0] = next;
        chain.splice(0..0, header);
        next = *kind;
    }
    frame[l3 + 6] = next;
    frame.splice(l3 + 40..l3 + 40, chain);
    let payload_len = (frame.len() - l3 - 40) as u16;
    frame[l3 + 4..l3 + 6].copy_from_slice(&payload_len.to_be_bytes());
}

/// The reasons a SYN is answered with a cookie: the raw helper after a lookup, the stamping
/// helper, the raw helper without a lookup (the fast path).
pub const COOKIE_REASONS: [Reason; 3] = [
    Reason::CookieRaw,
    Reason::CookieStamped,
    Reason::CookieNoLookup,
];

/// SYNs answered with a cookie from XDP, every way, in a scrape of synguard's metrics.
pub fn cookies_sent(m: &synguard_lab::MetricsText) -> f64 {
    COOKIE_REASONS
        .into_iter()
        .map(|r| m.sum("synguard_decisions_total", &[("reason", r.name())]))
        .sum()
}
