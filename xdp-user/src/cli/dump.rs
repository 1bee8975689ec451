//! `synguard dump`: a pcapng capture of what the XDP program saw and did. Every frame that
//! passes the filters is written as it arrived, with the action taken and the reason (the
//! pcapng `epb_verdict` option, XDP type, and a comment), the interface, the receive queue and
//! the CPU; a SYN answered from XDP is followed by the SYN-ACK that was sent, marked outbound.
//! tcpdump, tshark and Wireshark read it (`synguard dump -w - | tcpdump -nr -`).
//!
//! The data path does the capturing (`xdp-ebpf/src/dump.rs`); this side sets the filters,
//! refills each CPU's budget every [`REFILL_EVERY`] (the rate cap), reads the ring buffer and
//! writes the file. It stops at the count, the duration, SIGINT or SIGTERM, or when the reader
//! of its output goes away, and turns the capture off on its way out.

use std::{
    borrow::Cow,
    io::{BufWriter, Write},
    path::PathBuf,
    time::Duration,
};

use clap::Args;
use ipnet::IpNet;
use pcap_file::{
    DataLink, Endianness,
    pcapng::{
        PcapNgWriteError, PcapNgWriter,
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{
                InterfaceDescriptionBlock, InterfaceDescriptionOption, InterfaceTsResolution,
            },
            opt_common::{CommonOption, UnknownOption},
            section_header::{SectionHeaderBlock, SectionHeaderOption},
        },
    },
};
use synguard_common::{
    Action, Class, Reason,
    dump::{DumpConfig, DumpRecord, NO_REASON, NO_REASON_BIT, SNAP},
};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    Error,
    cli::Target,
    config::lists::Cidr,
    control::{self, protocol::Request, protocol::Status},
    datapath::dump::{DumpMaps, process_alive},
};

/// How often the ring buffer is read: the data path writes without waking the reader, which
/// would cost it more than the copying (`cargo xtask bench dump`). At the default rate cap
/// that is about 200 records a read, in a ring that holds about 1,900.
const READ_EVERY: Duration = Duration::from_millis(20);
/// How often each CPU's budget is refilled: the rate cap's granularity, and how long a dumper
/// that died keeps costing the data path anything at all.
const REFILL_EVERY: Duration = Duration::from_millis(100);

#[derive(Clone, Debug, Args)]
pub struct DumpArgs {
    #[command(flatten)]
    pub target: Target,

    /// Write the capture (pcapng) to FILE, or to stdout with `-`.
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub write: PathBuf,

    /// Stop after this many packets (a SYN-ACK sent counts with its SYN).
    #[arg(short = 'c', long, value_name = "N")]
    pub count: Option<u64>,

    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,

    /// At most this many packets per second, all CPUs together: the data path copies no more
    /// than that, so a dump during a flood costs the flood's packets almost nothing.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub rate: u64,

    /// Only packets of these classes, e.g. `syn,ack` (as in synguard_packets_total).
    #[arg(long, value_delimiter = ',', value_name = "CLASS")]
    pub class: Vec<String>,

    /// Only packets decided for these reasons, e.g. `ack_forged,cookie_sent` (as in
    /// synguard_decisions_total); `none` for packets without a reason.
    #[arg(long, value_delimiter = ',', value_name = "REASON")]
    pub reason: Vec<String>,

    /// Only TCP segments from or to this port.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// Only packets from this source network, e.g. 198.18.0.0/15.
    #[arg(long, value_name = "CIDR")]
    pub source: Option<Cidr>,
}

impl DumpArgs {
    /// The filters, as the data path reads them; an unknown class or reason is an error.
    fn filters(&self) -> Result<DumpConfig, Error> {
        let bad = |what: &str, name: &str, known: Vec<&str>| {
            Error::Usage(format!(
                "unknown {what} '{name}'; known: {}",
                known.join(", ")
            ))
        };
        let mut config = DumpConfig {
            classes: (1 << Class::COUNT) - 1,
            reasons: u64::MAX,
            port: self.port.unwrap_or(0),
            ..DumpConfig::default()
        };
        if !self.class.is_empty() {
            config.classes = 0;
            for name in &self.class {
                let class = Class::ALL
                    .into_iter()
                    .find(|c| c.name() == name)
                    .ok_or_else(|| bad("class", name, Class::ALL.map(Class::name).to_vec()))?;
                config.classes |= 1 << class as u32;
            }
        }
        if !self.reason.is_empty() {
            config.reasons = 0;
            for name in &self.reason {
                let bit = match name.as_str() {
                    "none" => NO_REASON_BIT,
                    _ => Reason::ALL
                        .into_iter()
                        .find(|r| r.name() == name)
                        .ok_or_else(|| {
                            let mut known = Reason::ALL.map(Reason::name).to_vec();
                            known.push("none");
                            bad("reason", name, known)
                        })? as u32,
                };
                config.reasons |= 1 << bit;
            }
        }
        if let Some(Cidr(net)) = &self.source {
            let (family, address, mask): (u16, Vec<u8>, Vec<u8>) = match net {
                IpNet::V4(n) => (
                    4,
                    n.network().octets().to_vec(),
                    n.netmask().octets().to_vec(),
                ),
                IpNet::V6(n) => (
                    6,
                    n.network().octets().to_vec(),
                    n.netmask().octets().to_vec(),
                ),
            };
            config.source_family = family;
            for (i, (a, m)) in address.chunks(4).zip(mask.chunks(4)).enumerate() {
                config.source[i] = u32::from_ne_bytes(a.try_into().expect("4 bytes"));
                config.source_mask[i] = u32::from_ne_bytes(m.try_into().expect("4 bytes"));
            }
        }
        if self.rate == 0 {
            return Err(Error::Usage("--rate must be at least 1".into()));
        }
        Ok(config)
    }
}

pub async fn dump(args: &DumpArgs) -> Result<(), Error> {
    let filters = args.filters()?;
    let status: Status = control::request(
        &args.target.state_dir,
        args.target.iface.as_deref(),
        &Request::Status,
    )?;
    let mut maps = DumpMaps::of_program(status.program_id)?;
    let running = maps.config()?;
    if running.session != 0 && process_alive(running.owner_pid) {
        return Err(Error::Refused(format!(
            "a dump by process {} runs on {} already; one at a time",
            running.owner_pid, status.iface
        )));
    }
    let output: Box<dyn Write> = match args.write.to_str() {
        Some("-") => Box::new(BufWriter::new(std::io::stdout().lock())),
        _ => Box::new(BufWriter::new(std::fs::File::create(&args.write).map_err(
            |e| Error::Other(format!("cannot write {}: {e}", args.write.display())),
        )?)),
    };
    let mut pcap = Capture::start(output, &status.iface)?;

    let session = session_id();
    let per_refill = per_cpu_budget(args.rate)?;
    maps.refill(per_refill)?;
    maps.set_config(&DumpConfig {
        session,
        owner_pid: std::process::id(),
        ..filters
    })?;
    let outcome = capture(&mut maps, &mut pcap, args, session, per_refill).await;
    // Off first, then the budget: the data path stops copying at once.
    let stopped = maps
        .set_config(&DumpConfig::default())
        .and_then(|()| maps.refill(0));
    let written = pcap.packets;
    let finished = pcap.finish();
    eprintln!(
        "synguard dump: {written} packets captured on {}{}",
        status.iface,
        match outcome {
            Ok(End::OutputClosed) => "; the reader of the output went away",
            _ => "",
        }
    );
    outcome.map(|_| ()).and(stopped).and(finished)
}

/// How a capture ended: at a bound or a signal, or because its output was closed (`| head`),
/// which is a normal end too.
enum End {
    Done,
    OutputClosed,
}

async fn capture(
    maps: &mut DumpMaps,
    pcap: &mut Capture,
    args: &DumpArgs,
    session: u64,
    per_refill: u64,
) -> Result<End, Error> {
    let signal_error =
        |e: std::io::Error| Error::Other(format!("installing a signal handler failed: {e}"));
    let mut sigint = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut refill = tokio::time::interval(REFILL_EVERY);
    let deadline = args
        .duration
        .map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut read = tokio::time::interval(READ_EVERY);
    let wanted = args.count.unwrap_or(u64::MAX);
    loop {
        while let Some(item) = maps.ring.next() {
            if item.len() < size_of::<DumpRecord>() {
                continue;
            }
            // SAFETY: the data path writes whole `DumpRecord`s; the length was checked, and
            // `read_unaligned` copes with the ring's 8-byte alignment.
            let record = unsafe { (item.as_ptr() as *const DumpRecord).read_unaligned() };
            if record.session != session {
                continue;
            }
            match pcap.write(&record) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    return Ok(End::OutputClosed);
                }
                Err(e) => return Err(Error::Other(format!("writing the capture failed: {e}"))),
            }
            if pcap.packets >= wanted {
                return Ok(End::Done);
            }
        }
        if pcap.flush().is_err() {
            return Ok(End::OutputClosed);
        }
        tokio::select! {
            _ = read.tick() => {}
            _ = refill.tick() => maps.refill(per_refill)?,
            _ = sigint.recv() => return Ok(End::Done),
            _ = sigterm.recv() => return Ok(End::Done),
            _ = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => return Ok(End::Done),
        }
    }
}

/// Records each CPU may write per refill, for `rate` a second in all.
fn per_cpu_budget(rate: u64) -> Result<u64, Error> {
    let cpus = aya::util::online_cpus()
        .map_err(|(what, e)| Error::Other(format!("{what}: {e}")))?
        .len()
        .max(1) as u64;
    let refills_per_second = (1000 / REFILL_EVERY.as_millis()) as u64;
    Ok((rate / refills_per_second / cpus).max(1))
}

fn session_id() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_or(0, |t| t.tv_nsec() as u64 ^ (t.tv_sec() as u64) << 30);
    (u64::from(std::process::id()) << 32 | (now & 0xffff_ffff)).max(1)
}

/// The pcapng file being written: one section, one interface, nanosecond timestamps.
struct Capture {
    writer: PcapNgWriter<Box<dyn Write>>,
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC, to date records (written with the latter).
    realtime_offset_ns: i128,
    packets: u64,
}

/// pcapng option codes of the Enhanced Packet Block (draft-ietf-opsawg-pcapng, 4.3.1) that
/// the crate has no variant for; epb_flags (2) it has.
const EPB_QUEUE: u16 = 6;
const EPB_VERDICT: u16 = 7;
/// epb_verdict's type for an XDP program's return code.
const VERDICT_LINUX_EBPF_XDP: u8 = 2;
/// epb_flags' direction bits.
const INBOUND: u32 = 0b01;
const OUTBOUND: u32 = 0b10;

impl Capture {
    fn start(output: Box<dyn Write>, iface: &str) -> Result<Capture, Error> {
        let fail = |e: PcapNgWriteError| Error::Other(format!("writing the capture failed: {e}"));
        // Little endian, as the option values below are written.
        let section = SectionHeaderBlock {
            endianness: Endianness::Little,
            options: vec![SectionHeaderOption::UserApplication(Cow::Borrowed(
                concat!("synguard ", env!("CARGO_PKG_VERSION")),
            ))],
            ..SectionHeaderBlock::default()
        };
        let mut writer = PcapNgWriter::with_section_header(output, section).map_err(fail)?;
        writer
            .write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen: SNAP as u32,
                options: vec![
                    InterfaceDescriptionOption::IfName(Cow::Owned(iface.to_string())),
                    InterfaceDescriptionOption::IfDescription(Cow::Borrowed(
                        "as synguard's XDP program saw it, before the kernel's stack",
                    )),
                    InterfaceDescriptionOption::IfTsResol(InterfaceTsResolution::NANO),
                ],
            })
            .map_err(fail)?;
        let ns = |clock| {
            nix::time::clock_gettime(clock).map_or(0, |t| {
                i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec())
            })
        };
        Ok(Capture {
            writer,
            realtime_offset_ns: ns(nix::time::ClockId::CLOCK_REALTIME)
                - ns(nix::time::ClockId::CLOCK_MONOTONIC),
            packets: 0,
        })
    }

    /// The frame as it arrived, with its verdict; then the reply, if one was sent.
    fn write(&mut self, record: &DumpRecord) -> std::io::Result<()> {
        let at = Duration::from_nanos(
            (i128::from(record.at_ns) + self.realtime_offset_ns).max(0) as u64
        );
        let action = Action::ALL
            .get(usize::from(record.action))
            .map_or("?", |a| a.name());
        let class = Class::ALL
            .get(usize::from(record.class))
            .map_or("?", |c| c.name());
        let reason = match record.reason {
            NO_REASON => "none",
            r => Reason::ALL.get(usize::from(r)).map_or("?", |r| r.name()),
        };
        let comment = format!(
            "synguard: {action} ({}), reason {reason}, class {class}, cpu {}",
            xdp_name(record.xdp_code),
            record.cpu
        );
        let mut verdict = vec![VERDICT_LINUX_EBPF_XDP];
        verdict.extend_from_slice(&u64::from(record.xdp_code).to_le_bytes());
        let captured = (record.len as usize).min(SNAP);
        let queue = record.rx_queue.to_le_bytes();
        self.packet(
            at,
            record.len,
            &record.bytes[..captured],
            vec![
                EnhancedPacketOption::Common(CommonOption::Comment(Cow::Owned(comment))),
                EnhancedPacketOption::Flags(INBOUND),
                EnhancedPacketOption::Common(CommonOption::Unknown(UnknownOption::new(
                    EPB_VERDICT,
                    &verdict,
                ))),
                EnhancedPacketOption::Common(CommonOption::Unknown(UnknownOption::new(
                    EPB_QUEUE, &queue,
                ))),
            ],
        )?;
        if record.reply_len > 0 {
            let captured = (record.reply_len as usize).min(SNAP);
            let comment = format!(
                "synguard: the reply sent from XDP (XDP_TX) to the {class} above, reason {reason}, cpu {}",
                record.cpu
            );
            self.packet(
                at,
                record.reply_len,
                &record.reply[..captured],
                vec![
                    EnhancedPacketOption::Common(CommonOption::Comment(Cow::Owned(comment))),
                    EnhancedPacketOption::Flags(OUTBOUND),
                ],
            )?;
        }
        self.packets += 1;
        Ok(())
    }

    fn packet(
        &mut self,
        at: Duration,
        len: u32,
        data: &[u8],
        options: Vec<EnhancedPacketOption<'_>>,
    ) -> std::io::Result<()> {
        self.writer
            .write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: at,
                original_len: len,
                data: Cow::Borrowed(data),
                options,
            })
            .map(|_| ())
            .map_err(|e| match e {
                PcapNgWriteError::Io(e) => e,
                other => std::io::Error::other(other.to_string()),
            })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.get_mut().flush()
    }

    fn finish(mut self) -> Result<(), Error> {
        match self.flush() {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(Error::Other(format!("writing the capture failed: {e}"))),
        }
    }
}

fn xdp_name(code: u8) -> &'static str {
    match code {
        0 => "XDP_ABORTED",
        1 => "XDP_DROP",
        2 => "XDP_PASS",
        3 => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "XDP_?",
    }
}
