//! The real `synguard` binary, run inside a lab namespace.

use std::{
    fs::File,
    net::SocketAddr,
    path::PathBuf,
    process::Output,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;

use crate::{MetricsText, Netns, Process, http_get};

/// The `synguard` binary under test: `$SYNGUARD_BIN` (set by `cargo xtask test`), else the one
/// cargo built next to the running test executable.
pub fn synguard_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SYNGUARD_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> -> target/<profile>/synguard
    let candidate = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("synguard"))
        .context("cannot locate the target directory")?;
    if !candidate.exists() {
        bail!(
            "{} does not exist: build it first (`cargo xtask test` does) or set SYNGUARD_BIN",
            candidate.display()
        );
    }
    Ok(candidate)
}

/// A running `synguard run` on the namespace's veth end, serving metrics on its loopback.
pub struct Synguard {
    process: Process,
    ns: Netns,
    log: PathBuf,
    pub metrics_addr: SocketAddr,
}

impl Synguard {
    /// Starts `synguard run --iface <ns.iface> --metrics-addr 127.0.0.1:9477 <extra>` in `ns`
    /// and waits until it serves /healthz.
    pub fn start(ns: &Netns, extra: &[&str]) -> Result<Synguard> {
        Self::start_with(ns, &[], extra)
    }

    /// Like `start`, through a wrapper command such as setpriv.
    pub fn start_with(ns: &Netns, wrapper: &[&str], extra: &[&str]) -> Result<Synguard> {
        let metrics_addr: SocketAddr = "127.0.0.1:9477".parse()?;
        let log = std::env::temp_dir().join(format!("{}-synguard.log", ns.name));
        let bin = synguard_bin()?;
        let bin = bin.to_str().context("non-UTF-8 path")?;
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = ns.command(program);
                cmd.args(rest).arg(bin);
                cmd
            }
            None => ns.command(bin),
        };
        // `ip netns exec` remounts /sys, so /sys/fs/bpf would be a plain directory in a mount
        // namespace that dies with synguard: pins go to the lab's own BPF filesystem.
        crate::netns::ensure_lab_bpffs()?;
        cmd.env("SYNGUARD_BPFFS", crate::netns::LAB_BPFFS);
        // A machine's own /etc/synguard/synguard.toml must not change what a test runs; a
        // test that wants a file names it with --config, which wins.
        cmd.env("SYNGUARD_CONFIG", "/dev/null");
        cmd.args([
            "run",
            "--iface",
            &ns.iface,
            "--metrics-addr",
            &metrics_addr.to_string(),
        ])
        .args(extra)
        .stderr(File::create(&log)?);
        let mut process = Process::spawn("synguard", &mut cmd)?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = process.try_status()? {
                bail!(
                    "synguard exited during start-up ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if http_get(ns, metrics_addr, "/healthz", Duration::from_millis(500)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("synguard did not serve /healthz within 15 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Synguard {
            process,
            ns: ns.clone(),
            log,
            metrics_addr,
        })
    }

    /// Scrapes /metrics.
    pub fn metrics(&self) -> Result<MetricsText> {
        MetricsText::parse(&self.metrics_raw()?)
    }

    pub fn metrics_raw(&self) -> Result<String> {
        http_get(
            &self.ns,
            self.metrics_addr,
            "/metrics",
            Duration::from_secs(5),
        )
    }

    /// The process id (`ip netns exec` execs synguard, so it is synguard's own).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// What synguard has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills synguard with SIGKILL, as a crash would, and waits for it.
    pub fn kill(mut self) -> Result<Output> {
        self.process.stop(Signal::SIGKILL, Duration::from_secs(10))
    }

    /// Sends `signal` and leaves it running (SIGHUP).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.process.pid() as i32),
            signal,
        )?;
        Ok(())
    }

    /// Waits for synguard to exit by itself (after `synguard detach`).
    pub fn wait(mut self, timeout: Duration) -> Result<Output> {
        self.process.wait(timeout)
    }

    /// Sends `signal` and waits for synguard to exit; fails if it does not exit cleanly.
    pub fn stop(mut self, signal: Signal) -> Result<Output> {
        let out = self.process.stop(signal, Duration::from_secs(10))?;
        if !out.status.success() {
            bail!("synguard exited with {}: {}", out.status, self.log());
        }
        Ok(out)
    }
}

impl Drop for Synguard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}
