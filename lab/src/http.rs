//! A tiny HTTP server for the server namespace and a client for the client namespace: enough
//! to tell whether legitimate requests get through, and how fast.

use std::{
    io::{Read, Write},
    net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::Netns;

const BODY: &str = "synguard lab: ok\n";

/// Serves `BODY` to every request on one port (IPv4 and IPv6) until dropped.
pub struct HttpServer {
    pub port: u16,
    listener: TcpListener,
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl HttpServer {
    pub fn start(ns: &Netns, port: u16) -> Result<HttpServer> {
        // Bound inside the namespace; the socket stays there.
        let listener = ns
            .enter(|| TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)))?
            .with_context(|| {
                format!("binding the lab HTTP server to port {port} in {}", ns.name)
            })?;
        let served = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let listener_fd = listener.try_clone()?;
        let thread = thread::spawn({
            let (served, stop) = (Arc::clone(&served), Arc::clone(&stop));
            move || {
                // Blocking accept: polling would add its interval to every request's latency.
                // `Drop` wakes it with shutdown(2).
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let served = Arc::clone(&served);
                            thread::spawn(move || {
                                if respond(stream).is_ok() {
                                    served.fetch_add(1, Ordering::Relaxed);
                                }
                            });
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            }
        });
        Ok(HttpServer {
            port,
            listener: listener_fd,
            served,
            stop,
            thread: Some(thread),
        })
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // On Linux, shutting down a listening socket makes a blocked accept() return EINVAL.
        let _ = nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&self.listener),
            nix::sys::socket::Shutdown::Both,
        );
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn respond(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    )
}

/// One HTTP/1.0 GET from inside `ns`; the body of a 200 response, or an error.
pub fn http_get(ns: &Netns, addr: SocketAddr, path: &str, timeout: Duration) -> Result<String> {
    let path = path.to_string();
    ns.enter(move || get(addr, &path, timeout))?
}

pub(crate) fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("reading the response from {addr}{path}"))?;
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        bail!("incomplete HTTP response from {addr}{path}: {response:?}");
    };
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        bail!("{addr}{path} answered {status:?}");
    }
    Ok(body.to_string())
}

/// What a run of legitimate requests achieved.
#[derive(Debug, Default)]
pub struct LegitReport {
    pub attempted: u32,
    pub succeeded: u32,
    /// Latency of each successful request, sorted.
    pub latencies: Vec<Duration>,
    pub first_error: Option<String>,
}

impl LegitReport {
    /// Makes one request (from the calling thread's namespace) and records how it went.
    fn request(&mut self, addr: SocketAddr, timeout: Duration) {
        self.attempted += 1;
        let start = Instant::now();
        match get(addr, "/", timeout) {
            Ok(body) if body == BODY => {
                self.succeeded += 1;
                self.latencies.push(start.elapsed());
            }
            Ok(body) => {
                self.first_error
                    .get_or_insert(format!("unexpected body {body:?}"));
            }
            Err(e) => {
                self.first_error.get_or_insert(format!("{e:#}"));
            }
        }
    }

    pub fn success_rate(&self) -> f64 {
        if self.attempted == 0 {
            return 0.0;
        }
        f64::from(self.succeeded) / f64::from(self.attempted)
    }

    /// The `q` quantile (0..=1) of the successful requests' latency.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let rank = (q * (self.latencies.len() - 1) as f64).round() as usize;
        Some(self.latencies[rank])
    }
}

/// Makes sequential requests from `ns` to `addr` for `duration`, each bounded by `timeout`:
/// how many complete in a fixed time is the measure of service under load.
pub fn run_legit_for(
    ns: &Netns,
    addr: SocketAddr,
    duration: Duration,
    timeout: Duration,
) -> Result<LegitReport> {
    ns.enter(move || {
        let mut report = LegitReport::default();
        let end = Instant::now() + duration;
        while Instant::now() < end {
            report.request(addr, timeout);
        }
        report.latencies.sort();
        report
    })
}

/// Makes `count` sequential requests from `ns` to `addr`, each bounded by `timeout`, spaced by
/// `interval`.
pub fn run_legit_clients(
    ns: &Netns,
    addr: SocketAddr,
    count: u32,
    interval: Duration,
    timeout: Duration,
) -> Result<LegitReport> {
    ns.enter(move || {
        let mut report = LegitReport::default();
        for _ in 0..count {
            report.request(addr, timeout);
            thread::sleep(interval);
        }
        report.latencies.sort();
        report
    })
}
