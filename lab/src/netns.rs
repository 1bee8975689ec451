//! Namespaces, the veth pair between them, and entering a namespace from a thread.

use std::{
    fs::File,
    net::{Ipv4Addr, Ipv6Addr},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
};

use anyhow::{Context, Result, bail, ensure};
use aya::{
    Ebpf,
    maps::PerCpuArray,
    programs::{Xdp, XdpMode},
};
use nix::sched::{CloneFlags, setns};

/// Source range for spoofed floods (the upper half of 198.18.0.0/16, inside RFC 2544's
/// benchmarking range).
pub const SPOOFED_V4: &str = "198.18.128.0/17";

/// The IPv6 floods' source: an address of the client namespace of its own (IPv6 floods are not
/// spoofed), whose replies the client's XDP program drops as it drops those to SPOOFED_V4.
pub const FLOOD_V6: &str = "fd00:198:18::8000";

/// Every lab namespace starts with this, followed by the creating process's pid.
const PREFIX: &str = "sglab-";

/// One side of the lab.
#[derive(Debug, Clone)]
pub struct Netns {
    /// Name under /run/netns.
    pub name: String,
    /// This side's end of the veth pair.
    pub iface: String,
    pub mac: [u8; 6],
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
}

impl Netns {
    /// A command that runs `program` inside this namespace (`ip netns exec`, which execs it, so
    /// the child's pid is the program's own).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `f` on a thread that has joined this namespace. Sockets it opens stay in the
    /// namespace after it returns.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        thread::scope(|scope| {
            scope
                .spawn(move || -> Result<T> {
                    setns(&file, CloneFlags::CLONE_NEWNET)
                        .with_context(|| format!("joining network namespace {path}"))?;
                    Ok(f())
                })
                .join()
                .map_err(|_| anyhow::anyhow!("a thread in namespace {} panicked", self.name))?
        })
    }

    /// Runs a command in this namespace and fails with its stderr if it fails.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let mut cmd = self.command(program);
        cmd.args(args);
        run(&mut cmd)
    }

    /// A sysctl of this namespace, e.g. `net.ipv4.tcp_syncookies`.
    pub fn sysctl(&self, key: &str) -> Result<String> {
        Ok(self.exec("sysctl", &["-n", key])?.trim().to_string())
    }

    /// A counter of the kernel's TCP/IP statistics in this namespace, e.g.
    /// `TcpExtSyncookiesSent` (from /proc/net/netstat or /proc/net/snmp, as nstat names them).
    pub fn netstat(&self, name: &str) -> Result<u64> {
        // /proc/net is /proc/self/net: the namespace of the process's main thread. This
        // thread's own is under /proc/thread-self.
        let text = self.enter(|| -> std::io::Result<String> {
            Ok(std::fs::read_to_string("/proc/thread-self/net/netstat")?
                + &std::fs::read_to_string("/proc/thread-self/net/snmp")?)
        })??;
        // Each group is two lines: "TcpExt: names..." then "TcpExt: values...".
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            let Some((group, names)) = names.split_once(": ") else {
                continue;
            };
            let Some((_, values)) = values.split_once(": ") else {
                continue;
            };
            for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
                if format!("{group}{n}") == name {
                    return Ok(v.parse()?);
                }
            }
        }
        bail!("no counter {name} in /proc/net/netstat or /proc/net/snmp")
    }

    /// Sets a sysctl of this namespace.
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")])?;
        Ok(())
    }

    /// Whether any XDP program is attached to this side's veth end.
    pub fn xdp_attached(&self) -> Result<bool> {
        let out =
            run(Command::new("ip").args(["-n", &self.name, "link", "show", "dev", &self.iface]))?;
        Ok(out.contains("prog/xdp"))
    }
}

/// A server and a client namespace, joined by veth. Dropping it removes both, with everything
/// in them: the veth pair, XDP attachments, processes and sockets.
pub struct Lab {
    pub server: Netns,
    pub client: Netns,
    // The program on the client's end; see `attach_client_program`.
    client_program: Option<Ebpf>,
    // The same on the client ends of links added with `add_link`, and their server ends.
    extra_programs: Vec<Ebpf>,
    extra_ifaces: Vec<String>,
    created: Vec<String>,
}

impl Lab {
    /// Builds a fresh lab with unique names.
    pub fn new() -> Result<Lab> {
        require_root()?;
        remove_stale_labs();

        static SEQUENCE: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let server = Netns {
            name: format!("{PREFIX}{pid}-{n}-srv"),
            // IFNAMSIZ is 16 with the NUL: "sg" + 7-digit pid + "x" + n + side fits.
            iface: format!("sg{pid}x{n}s"),
            mac: [0x02, 0x00, 0xc6, 0x12, 0x00, 0x01],
            ipv4: Ipv4Addr::new(198, 18, 0, 1),
            ipv6: "fd00:198:18::1".parse().unwrap(),
        };
        let client = Netns {
            name: format!("{PREFIX}{pid}-{n}-cli"),
            iface: format!("sg{pid}x{n}c"),
            mac: [0x02, 0x00, 0xc6, 0x12, 0x00, 0x02],
            ipv4: Ipv4Addr::new(198, 18, 0, 2),
            ipv6: "fd00:198:18::2".parse().unwrap(),
        };
        let mut lab = Lab {
            server,
            client,
            client_program: None,
            extra_programs: Vec::new(),
            extra_ifaces: Vec::new(),
            created: Vec::new(),
        };
        // From here on, a failure drops `lab`, which removes whatever was created.
        for ns in [lab.server.name.clone(), lab.client.name.clone()] {
            run(Command::new("ip").args(["netns", "add", &ns]))?;
            lab.created.push(ns);
        }
        lab.wire()?;
        lab.client_program = Some(attach_client_program(&lab.client)?);
        Ok(lab)
    }

    /// SYN-ACKs that reached the client end so far, and how many of them were addressed to
    /// spoofed sources (and dropped there).
    pub fn client_synacks(&mut self) -> Result<(u64, u64)> {
        let ebpf = self.client_program.as_mut().context("no client program")?;
        let counts: PerCpuArray<_, u64> = PerCpuArray::try_from(
            ebpf.map_mut("LAB_CLIENT_COUNTS")
                .context("LAB_CLIENT_COUNTS missing")?,
        )?;
        let sum = |index: u32| -> Result<u64> { Ok(counts.get(&index, 0)?.iter().sum()) };
        Ok((sum(0)?, sum(1)?))
    }

    /// One more veth pair between the server and the client namespaces, IPv4 only, in
    /// 198.18.<n+1>.0/24 for the n-th added link (server .1, client .2), with the client
    /// end's program attached as on the first. Returns its (server end, client end). Spoofed
    /// sources' replies stay routed over the first link, except those XDP sends straight back.
    pub fn add_link(&mut self) -> Result<(Netns, Netns)> {
        let n = self.extra_ifaces.len() as u8 + 1;
        ensure!(n < 100, "too many links");
        let server = Netns {
            name: self.server.name.clone(),
            iface: format!("{}{n}", self.server.iface),
            mac: [0x02, 0x00, 0xc6, 0x12, n, 0x01],
            ipv4: Ipv4Addr::new(198, 18, n, 1),
            ipv6: Ipv6Addr::UNSPECIFIED,
        };
        let client = Netns {
            name: self.client.name.clone(),
            iface: format!("{}{n}", self.client.iface),
            mac: [0x02, 0x00, 0xc6, 0x12, n, 0x02],
            ipv4: Ipv4Addr::new(198, 18, n, 2),
            ipv6: Ipv6Addr::UNSPECIFIED,
        };
        self.extra_ifaces.push(server.iface.clone());
        veth_pair(&server, &client)?;
        for (me, peer) in [(&server, &client), (&client, &server)] {
            me.exec(
                "ip",
                &["addr", "add", &format!("{}/24", me.ipv4), "dev", &me.iface],
            )?;
            me.exec("ip", &["link", "set", &me.iface, "up"])?;
            static_neighbour(me, &peer.ipv4.to_string(), &peer.mac)?;
        }
        self.extra_programs.push(attach_client_program(&client)?);
        Ok((server, client))
    }

    fn wire(&self) -> Result<()> {
        let (s, c) = (&self.server, &self.client);
        // A quiet link: no router solicitations, duplicate-address detection or link-local
        // address, so that what crosses the veth is what a test sent (MLD reports, which the
        // kernel sends when an address is added, remain; they are IPv6 with a Hop-by-Hop
        // header). Set as defaults before the veth exists, so its ends inherit them.
        for ns in [s, c] {
            ns.exec(
                "sysctl",
                &[
                    "-qw",
                    "net.ipv6.conf.default.router_solicitations=0",
                    "net.ipv6.conf.default.accept_ra=0",
                    "net.ipv6.conf.default.accept_dad=0",
                    "net.ipv6.conf.default.addr_gen_mode=1",
                ],
            )?;
        }
        veth_pair(s, c)?;
        for (me, peer) in [(s, c), (c, s)] {
            me.exec("ip", &["link", "set", "lo", "up"])?;
            me.exec(
                "ip",
                &["addr", "add", &format!("{}/24", me.ipv4), "dev", &me.iface],
            )?;
            me.exec(
                "ip",
                &[
                    "addr",
                    "add",
                    &format!("{}/64", me.ipv6),
                    "dev",
                    &me.iface,
                    "nodad",
                ],
            )?;
            me.exec("ip", &["link", "set", &me.iface, "up"])?;
            for addr in [peer.ipv4.to_string(), peer.ipv6.to_string()] {
                static_neighbour(me, &addr, &peer.mac)?;
            }
        }
        c.exec(
            "ip",
            &[
                "addr",
                "add",
                &format!("{FLOOD_V6}/128"),
                "dev",
                &c.iface,
                "nodad",
                // Deprecated at once, so the client's own connections never pick it as their
                // source (RFC 6724, rule 3).
                "preferred_lft",
                "0",
            ],
        )?;
        static_neighbour(s, FLOOD_V6, &c.mac)?;
        // Spoofed flood sources live in SPOOFED_V4. The server's replies to them go back to the
        // client namespace, which is not those addresses and does not forward, so its kernel
        // drops them: nothing leaves the lab.
        s.exec(
            "ip",
            &[
                "route",
                "add",
                SPOOFED_V4,
                "via",
                &c.ipv4.to_string(),
                "dev",
                &s.iface,
            ],
        )?;
        Ok(())
    }
}

/// A veth pair between two namespaces' `iface`s, created directly inside them: nothing ever
/// appears in the caller's namespace.
fn veth_pair(a: &Netns, b: &Netns) -> Result<()> {
    run(Command::new("ip").args([
        "link",
        "add",
        &a.iface,
        "netns",
        &a.name,
        "address",
        &mac(&a.mac),
        "type",
        "veth",
        "peer",
        "name",
        &b.iface,
        "netns",
        &b.name,
        "address",
        &mac(&b.mac),
    ]))?;
    Ok(())
}

/// A static neighbour entry on `me`'s end: no ARP or neighbour discovery in the counters, and
/// no packets queued (and possibly dropped) while an address resolves at the start of a flood.
fn static_neighbour(me: &Netns, addr: &str, lladdr: &[u8; 6]) -> Result<()> {
    me.exec(
        "ip",
        &[
            "neigh",
            "replace",
            addr,
            "lladdr",
            &mac(lladdr),
            "dev",
            &me.iface,
            "nud",
            "permanent",
        ],
    )?;
    Ok(())
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Detach before the namespaces go (they would take it with them anyway).
        self.client_program = None;
        self.extra_programs.clear();
        // synguard's namespace lock and recorded sysctls are named after the namespace's inode.
        if let Ok(meta) = std::fs::metadata(format!("/run/netns/{}", self.server.name)) {
            use std::os::unix::fs::MetadataExt;
            for prefix in ["lock", "sysctl"] {
                let _ = std::fs::remove_file(format!("/run/synguard/{prefix}-netns{}", meta.ino()));
            }
        }
        for ns in self.created.drain(..).rev() {
            if let Err(e) = remove_netns(&ns) {
                eprintln!("lab: cleaning up namespace {ns} failed: {e:#}");
            }
        }
        for iface in std::iter::once(&self.server.iface).chain(&self.extra_ifaces) {
            remove_synguard_state(iface);
            remove_synguard_pins(|name| name.ends_with(&format!("-{iface}")));
        }
    }
}

/// The BPF filesystem synguard pins in when the lab starts it (`--bpffs`), in the host's
/// mount namespace.
pub const LAB_BPFFS: &str = "/run/synguard-lab/bpf";

/// Mounts the lab's BPF filesystem unless it is mounted.
pub fn ensure_lab_bpffs() -> Result<()> {
    synguard::datapath::pins::ensure_bpffs(std::path::Path::new(LAB_BPFFS))
        .map_err(anyhow::Error::msg)
}

/// A synguard killed inside the lab leaves its program pinned in the BPF filesystem (that is
/// what keeps protection going); with the namespace gone, the pins are litter.
fn remove_synguard_pins(matches: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(format!("{LAB_BPFFS}/synguard")) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        if matches(&entry.file_name().to_string_lossy()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The client end's XDP program (`lab_client`): it counts the SYN-ACKs that come back and
/// drops those addressed to spoofed sources. It is also what lets the server's XDP_TX frames
/// arrive at all: on veth they are delivered only when the peer runs an XDP program too
/// (docs/design.md; veth_xdp_xmit() in drivers/net/veth.c needs the peer's XDP rings, which
/// exist only while a program is attached).
fn attach_client_program(client: &Netns) -> Result<Ebpf> {
    let mut ebpf =
        Ebpf::load(synguard::datapath::objects::LAB).context("loading the lab's BPF object")?;
    let program: &mut Xdp = ebpf
        .program_mut("lab_client")
        .context("lab_client missing from the lab object")?
        .try_into()?;
    program.load().context("loading lab_client")?;
    let iface = client.iface.clone();
    client.enter(move || program.attach(&iface, XdpMode::Driver))??;
    Ok(ebpf)
}

/// Fails unless running as root, which the lab needs for namespaces, veth and XDP.
pub fn require_root() -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (network namespaces, veth, XDP). Run it as root, \
         e.g. `sudo cargo xtask test`; it does not skip itself"
    );
    Ok(())
}

/// A synguard killed inside the lab leaves the sysctl values it meant to restore in its state
/// directory (the default one; tests that choose their own remove it). The namespace took the
/// sysctls with it, so the file is only litter.
fn remove_synguard_state(iface: &str) {
    let Ok(entries) = std::fs::read_dir("/run/synguard") else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        if entry
            .file_name()
            .to_string_lossy()
            .ends_with(&format!("-{iface}"))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn remove_netns(name: &str) -> Result<()> {
    // Processes still inside keep a namespace alive after `ip netns del`: end them first.
    if let Ok(pids) = run(Command::new("ip").args(["netns", "pids", name])) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    run(Command::new("ip").args(["netns", "del", name]))?;
    Ok(())
}

/// Removes labs whose creating process is gone (killed before its `Drop` could run).
fn remove_stale_labs() {
    remove_labs_where(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists());
}

/// Removes every lab created by process `pid`, with the processes inside. For a signal
/// handler thread: an interrupted run cleans up at once instead of leaving it to the next.
pub fn remove_labs_of(pid: u32) {
    remove_labs_where(|creator| creator == pid);
}

fn remove_labs_where(matches: impl Fn(u32) -> bool) {
    // Pins are named after the server's interface, `netns<inode>-sg<pid>x<n>s`.
    remove_synguard_pins(|name| {
        name.split_once("-sg")
            .and_then(|(_, rest)| rest.split('x').next())
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(&matches)
    });
    let Ok(list) = run(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for name in list
        .lines()
        .filter_map(|line| line.split_whitespace().next())
    {
        let creator = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if creator.is_some_and(&matches) {
            let _ = remove_netns(name);
        }
    }
}

fn mac(bytes: &[u8; 6]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Runs a command to completion; its stdout, or an error with its stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
