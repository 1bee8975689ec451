//! Child processes that cannot outlive the test: bounded in time, ended on drop.

use std::{
    io::Read,
    process::{Child, Command, ExitStatus, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// A running child process. Dropping it sends SIGTERM, then SIGKILL after a grace period.
pub struct Process {
    child: Option<Child>,
    name: String,
}

impl Process {
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Process> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Process {
            child: Some(child),
            name: name.to_string(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether the process has exited; its status if so.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => bail!("{} was already waited for", self.name),
        }
    }

    /// Waits for the process to exit by itself, up to `timeout`; SIGKILL after that.
    pub fn wait(&mut self, timeout: Duration) -> Result<Output> {
        let Some(child) = self.child.take() else {
            bail!("{} was already stopped", self.name);
        };
        wait_bounded(child, timeout, &self.name)
    }

    /// Sends `signal` and waits for the exit, up to `timeout`; SIGKILL after that.
    pub fn stop(&mut self, signal: Signal, timeout: Duration) -> Result<Output> {
        let Some(child) = self.child.take() else {
            bail!("{} was already stopped", self.name);
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, signal);
        wait_bounded(child, timeout, &self.name)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop(Signal::SIGTERM, Duration::from_secs(5));
        }
    }
}

/// Waits for `child`, killing it once `timeout` has passed. Its pipes, if any, are drained on
/// threads meanwhile, so a chatty child cannot block on a full pipe.
fn wait_bounded(mut child: Child, timeout: Duration, name: &str) -> Result<Output> {
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        pipe.map(|mut pipe| {
            thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = pipe.read_to_end(&mut buf);
                buf
            })
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            eprintln!("{name} did not finish within {timeout:?}; killed it");
            break child.wait()?;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let collect = |h: Option<thread::JoinHandle<Vec<u8>>>| {
        h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
    };
    Ok(Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

/// Runs `cmd` to completion, capturing its output, and kills it if it runs past `timeout`.
/// Every generator (hping3 and friends) goes through here, so no flood outlives its test.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let name = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    wait_bounded(child, timeout, &name)
}
