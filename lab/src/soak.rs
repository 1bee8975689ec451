//! The soak: synguard protecting an HTTP server in the lab for a long while, with SYN floods
//! alternating with calm, legit requests throughout, and every 10 to 30 s one of the changes an
//! operator makes: a mode change, a threshold change, a list entry added and removed, a SIGHUP
//! reload, a handover (SIGQUIT) and takeover, kill -9 and a restart, a detach and an attach.
//!
//! What it holds synguard to: no legit request fails; the controller's memory and open file
//! descriptors stay flat; the per-source buckets stay within their map; and at the end the
//! sysctls are back, and no pin, lock, state file or namespace is left.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use nix::sys::signal::Signal;

use crate::{
    HttpServer, LAB_BPFFS, Lab, SynShape, Synguard, run_bounded, syn_flood_from, synguard_bin,
};

const PORT: u16 = 80;
/// The floods: 50,000 SYN/s from 256 spoofed sources (about 200 SYN/s each, over the
/// per-source limit, so each earns a bucket), 5 s on, 5 s off.
const FLOOD_PPS: u64 = 50_000;
const FLOOD_ON: Duration = Duration::from_secs(5);
const CALM: Duration = Duration::from_secs(5);
/// A legit request every 50 ms (20 a second, within the per-source limit of 50), each allowed 3 s (a SYN retransmission fits in it).
const LEGIT_EVERY: Duration = Duration::from_millis(50);
const LEGIT_TIMEOUT: Duration = Duration::from_secs(3);

/// The changes, made in this order, round and round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Mode,
    Threshold,
    List,
    Reload,
    Takeover,
    KillAndRestart,
    DetachAndAttach,
}

impl Change {
    pub const ALL: [Change; 7] = [
        Change::Mode,
        Change::Threshold,
        Change::List,
        Change::Reload,
        Change::Takeover,
        Change::KillAndRestart,
        Change::DetachAndAttach,
    ];
}

/// What the soak saw.
#[derive(Debug, Default)]
pub struct SoakReport {
    pub elapsed: Duration,
    pub changes: Vec<(Duration, Change)>,
    pub requests: u64,
    /// Failed legit requests, with when and why; `in_detach` marks those while no synguard
    /// ran (the kernel alone, by design of a detach).
    pub failures: Vec<Failure>,
    pub floods: u64,
    pub syns_sent: u64,
    /// (pid, first, last) samples of each controller process that lived long enough.
    pub rss_kib: Vec<(u32, u64, u64)>,
    pub fds: Vec<(u32, u64, u64)>,
    pub max_source_buckets: f64,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub at: Duration,
    pub in_detach: bool,
    pub why: String,
}

impl SoakReport {
    pub fn print(&self) {
        println!(
            "soak: {:.0} s, {} changes, {} legit requests, {} failed ({} during a detach), \
             {} floods ({} SYNs)",
            self.elapsed.as_secs_f64(),
            self.changes.len(),
            self.requests,
            self.failures.len(),
            self.failures.iter().filter(|f| f.in_detach).count(),
            self.floods,
            self.syns_sent
        );
        for change in Change::ALL {
            let n = self.changes.iter().filter(|(_, c)| *c == change).count();
            println!("  {change:?}: {n}");
        }
        for (what, samples, unit) in [("RSS", &self.rss_kib, "KiB"), ("fds", &self.fds, "")] {
            for (pid, first, last) in samples {
                println!(
                    "  controller {pid}: {what} {first} {unit} at start, {last} {unit} at end"
                );
            }
        }
        println!("  per-source buckets at most {}", self.max_source_buckets);
        for f in &self.failures {
            println!(
                "  failure at {:.1} s (detach {}): {}",
                f.at.as_secs_f64(),
                f.in_detach,
                f.why
            );
        }
    }

    /// The soak's verdict: what it promises, checked.
    pub fn check(&self) -> Result<()> {
        let outside: Vec<&Failure> = self.failures.iter().filter(|f| !f.in_detach).collect();
        ensure!(outside.is_empty(), "legit requests failed: {outside:?}");
        ensure!(self.requests > 0, "no legit request was made");
        for (pid, first, last) in &self.rss_kib {
            ensure!(
                *last as f64 <= *first as f64 * 1.10,
                "controller {pid}'s RSS grew from {first} to {last} KiB"
            );
        }
        for (pid, first, last) in &self.fds {
            ensure!(
                *last as f64 <= (*first as f64 * 1.10).max(*first as f64 + 1.0),
                "controller {pid}'s open files grew from {first} to {last}"
            );
        }
        ensure!(
            self.max_source_buckets >= 1.0,
            "the flood's sources earned no per-source bucket"
        );
        ensure!(
            self.max_source_buckets <= f64::from(synguard_common::SOURCE_BUCKETS),
            "more per-source buckets than the map holds"
        );
        Ok(())
    }
}

/// VmRSS (KiB) and open descriptors of a process.
fn usage(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss, fds))
}

/// (RSS KiB, open descriptors).
type Usage = (u64, u64);

/// The controller under soak, and the samples of its usage.
struct Controller<'a> {
    lab: &'a Lab,
    config: PathBuf,
    sg: Option<Synguard>,
    /// The running process: (pid, started, first sample, last sample).
    samples: Option<(u32, Instant, Option<Usage>, Usage)>,
    done: Vec<(u32, Usage, Usage)>,
}

impl Controller<'_> {
    fn start(&mut self) -> Result<()> {
        let config = self.config.to_str().context("non-UTF-8 path")?.to_string();
        let sg = Synguard::start(&self.lab.server, &["--config", &config])?;
        self.samples = Some((sg.pid(), Instant::now(), None, (0, 0)));
        self.sg = Some(sg);
        Ok(())
    }

    fn sg(&self) -> Result<&Synguard> {
        self.sg.as_ref().context("synguard is not running")
    }

    /// Samples the running controller: its first sample 5 s after its start (once it has
    /// warmed up), its last whenever asked.
    fn sample(&mut self) {
        if let Some((pid, started, first, last)) = &mut self.samples
            && let Some(now) = usage(*pid)
        {
            *last = now;
            if first.is_none() && started.elapsed() >= Duration::from_secs(5) {
                *first = Some(now);
            }
        }
    }

    /// Ends the sampling of the running controller, before it exits.
    fn retire(&mut self) {
        self.sample();
        if let Some((pid, _, Some(first), last)) = self.samples.take() {
            self.done.push((pid, first, last));
        }
    }

    fn verb(&self, args: &[&str]) -> Result<()> {
        let mut cmd = Command::new(synguard_bin()?);
        cmd.args(args).args(["--iface", &self.lab.server.iface]);
        let out = run_bounded(&mut cmd, Duration::from_secs(20))?;
        if !out.status.success() {
            bail!(
                "synguard {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

fn write_config(path: &Path, per_source: u32) -> Result<()> {
    std::fs::write(
        path,
        format!(
            "mode = \"auto\"\nauto-threshold = \"2000\"\nauto-hold-ms = 2000\n\
             syn-rate-per-source = {per_source}\n"
        ),
    )?;
    Ok(())
}

/// Runs the soak for `duration`, a change every `min_gap` to `max_gap`.
pub fn run(duration: Duration, min_gap: Duration, max_gap: Duration) -> Result<SoakReport> {
    let lab = Lab::new()?;
    let sysctls = ["net.ipv4.tcp_syncookies", "net.ipv4.tcp_timestamps"];
    let before: Vec<String> = sysctls
        .iter()
        .map(|k| lab.server.sysctl(k))
        .collect::<Result<_>>()?;
    let netns_inode = std::fs::metadata(format!("/run/netns/{}", lab.server.name))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))?;
    let server = HttpServer::start(&lab.server, PORT)?;
    let config = std::env::temp_dir().join(format!("{}-soak.toml", lab.server.name));
    write_config(&config, 50)?;
    let mut controller = Controller {
        lab: &lab,
        config: config.clone(),
        sg: None,
        samples: None,
        done: Vec::new(),
    };
    controller.start()?;

    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let detached = AtomicBool::new(false);
    let failures = Mutex::new(Vec::new());
    let target = SocketAddr::new(lab.server.ipv4.into(), PORT);
    let mut report = SoakReport::default();

    let sources: Vec<[u8; 4]> = (0..=255).map(|i| [198, 18, 200, i]).collect();
    let result = thread::scope(|scope| -> Result<()> {
        let legit = scope.spawn(|| -> Result<u64> {
            let mut requests = 0;
            lab.client.enter(|| {
                while !stop.load(Ordering::Relaxed) {
                    let in_detach = detached.load(Ordering::Relaxed);
                    requests += 1;
                    if let Err(e) = crate::http::get(target, "/", LEGIT_TIMEOUT) {
                        failures.lock().unwrap().push(Failure {
                            at: started.elapsed(),
                            in_detach: in_detach || detached.load(Ordering::Relaxed),
                            why: format!("{e:#}"),
                        });
                    }
                    thread::sleep(LEGIT_EVERY);
                }
            })?;
            Ok(requests)
        });
        let sources = &sources;
        let flood = scope.spawn(|| -> Result<(u64, u64)> {
            let (mut floods, mut sent) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let count = FLOOD_PPS * FLOOD_ON.as_secs();
                let report = syn_flood_from(
                    &lab,
                    sources,
                    PORT,
                    count,
                    Some(FLOOD_PPS),
                    SynShape::Bare,
                    FLOOD_ON,
                )?;
                sent += report.sent;
                floods += 1;
                let calm_until = Instant::now() + CALM;
                while Instant::now() < calm_until && !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(100));
                }
            }
            Ok((floods, sent))
        });

        // A fixed pseudo-random walk over the gaps: the same soak each time.
        let mut state: u64 = 0x243f_6a88_85a3_08d3;
        let mut next_gap = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let span = max_gap.saturating_sub(min_gap).as_millis() as u64;
            min_gap + Duration::from_millis(state % span.max(1))
        };
        let mut turn = 0usize;
        let mut next_change = Instant::now() + next_gap();
        let run = (|| -> Result<()> {
            while started.elapsed() < duration {
                thread::sleep(Duration::from_millis(500));
                controller.sample();
                if let Ok(m) = controller.sg().and_then(|sg| sg.metrics()) {
                    let buckets = m.sum("synguard_source_buckets", &[]);
                    report.max_source_buckets = report.max_source_buckets.max(buckets);
                }
                if Instant::now() < next_change {
                    continue;
                }
                let change = Change::ALL[turn % Change::ALL.len()];
                let odd = (turn / Change::ALL.len()) % 2 == 1;
                turn += 1;
                report.changes.push((started.elapsed(), change));
                match change {
                    Change::Mode => {
                        controller.verb(&["set", if odd { "mode=auto" } else { "mode=cookie" }])?;
                        thread::sleep(Duration::from_secs(3));
                        controller.verb(&["set", "mode=auto"])?;
                    }
                    Change::Threshold => controller.verb(&[
                        "set",
                        if odd {
                            "auto-threshold=2000"
                        } else {
                            "auto-threshold=3000"
                        },
                    ])?,
                    Change::List => {
                        controller.verb(&["deny", "add", "198.18.250.0/24"])?;
                        thread::sleep(Duration::from_secs(1));
                        controller.verb(&["deny", "del", "198.18.250.0/24"])?;
                    }
                    Change::Reload => {
                        write_config(&config, if odd { 50 } else { 60 })?;
                        controller.sg()?.signal(Signal::SIGHUP)?;
                    }
                    Change::Takeover => {
                        controller.retire();
                        controller
                            .sg
                            .take()
                            .context("running")?
                            .stop(Signal::SIGQUIT)?;
                        controller.start()?;
                        ensure!(
                            controller.sg()?.log().contains("took over the program"),
                            "no takeover after the handover"
                        );
                    }
                    Change::KillAndRestart => {
                        controller.retire();
                        controller.sg.take().context("running")?.kill()?;
                        controller.start()?;
                    }
                    Change::DetachAndAttach => {
                        controller.retire();
                        detached.store(true, Ordering::Relaxed);
                        controller.verb(&["detach"])?;
                        let sg = controller.sg.take().context("running")?;
                        let out = sg.wait(Duration::from_secs(10))?;
                        ensure!(
                            out.status.success(),
                            "synguard's exit after detach: {out:?}"
                        );
                        thread::sleep(Duration::from_secs(1));
                        controller.start()?;
                        detached.store(false, Ordering::Relaxed);
                    }
                }
                next_change = Instant::now() + next_gap();
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        report.requests = legit.join().expect("the legit thread")?;
        let (floods, sent) = flood.join().expect("the flood thread")?;
        report.floods = floods;
        report.syns_sent = sent;
        run
    });
    // The last controller's final sample, then a clean stop.
    controller.retire();
    let stopped = controller.sg.take().map(|sg| sg.stop(Signal::SIGTERM));
    report.elapsed = started.elapsed();
    report.failures = failures.into_inner().unwrap();
    report.rss_kib = controller
        .done
        .iter()
        .map(|(p, f, l)| (*p, f.0, l.0))
        .collect();
    report.fds = controller
        .done
        .iter()
        .map(|(p, f, l)| (*p, f.1, l.1))
        .collect();
    result?;
    if let Some(stopped) = stopped {
        stopped?;
    }
    drop(server);
    let _ = std::fs::remove_file(&config);

    // Nothing left behind: the interface, the sysctls, the pins, the state files.
    ensure!(!lab.server.xdp_attached()?, "XDP left attached");
    for (key, was) in sysctls.iter().zip(&before) {
        let now = lab.server.sysctl(key)?;
        ensure!(now == *was, "{key} is {now}, was {was} before synguard");
    }
    let ours = |name: &str| name.contains(&format!("netns{netns_inode}"));
    let pins: Vec<String> = std::fs::read_dir(Path::new(LAB_BPFFS).join("synguard"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    ensure!(!pins.iter().any(|p| ours(p)), "pins left: {pins:?}");
    let state: Vec<String> = std::fs::read_dir("/run/synguard")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    let left: Vec<&String> = state
        .iter()
        .filter(|s| ours(s) || s.contains(&lab.server.iface))
        .collect();
    ensure!(
        left.is_empty(),
        "state files left in /run/synguard: {left:?}"
    );
    let namespaces = [lab.server.name.clone(), lab.client.name.clone()];
    drop(lab);
    let listed: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        !namespaces.iter().any(|n| listed.contains(n)),
        "namespaces left: {namespaces:?}"
    );
    Ok(report)
}
