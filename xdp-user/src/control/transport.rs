//! The control socket: the daemon's server, which reads one request line per connection and
//! hands it to the main loop, and the client the CLI verbs use.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream as StdUnixStream},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::de::DeserializeOwned;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader},
    net::{UnixListener, unix::OwnedReadHalf},
    sync::{Semaphore, mpsc, oneshot},
};
use tracing::warn;

use super::protocol::{Envelope, PROTOCOL_VERSION, Reply, Request, Response, decode_request};
use crate::Error;

/// The longest request the daemon reads: CIDR lists are sent in chunks well under it.
const MAX_REQUEST: usize = 1 << 20;
/// How long a client has to send its request, and to take the reply: a stalled client holds
/// no more than one of `MAX_CLIENTS` for that long.
const REQUEST_TIME: Duration = Duration::from_secs(5);
/// Clients served at once; the rest wait in the socket's backlog.
const MAX_CLIENTS: usize = 64;

/// A request for the main loop, with the channel its response goes back on.
pub type Pending = (Request, oneshot::Sender<Response<Reply>>);

/// The control socket of `iface`.
pub fn socket_path(state_dir: &Path, iface: &str) -> PathBuf {
    state_dir.join(format!("control-{iface}.sock"))
}

/// Binds the control socket. A socket file left by a killed run is replaced: the caller holds
/// the interface lock, so no live daemon owns it.
pub fn bind(path: &Path) -> Result<UnixListener, Error> {
    let fail = |e: std::io::Error| Error::Control {
        reason: "cannot serve the control socket",
        path: path.to_path_buf(),
        detail: Some(e.to_string()),
    };
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(fail)?;
    Ok(listener)
}

/// Accepts connections and forwards their requests to the main loop, until it is gone.
pub async fn serve(listener: UnixListener, requests: mpsc::Sender<Pending>) {
    let permits = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        // A client over the limit waits in the socket's backlog until one finishes.
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "control socket: accept failed");
                // Out of descriptors, say: do not spin on it.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let requests = requests.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (read, mut write) = stream.into_split();
            let response = match read_request(read).await {
                Err(e) => Response::error(e),
                Ok(request) => {
                    let (reply, response) = oneshot::channel();
                    if requests.send((request, reply)).await.is_err() {
                        Response::error("synguard is shutting down")
                    } else {
                        response
                            .await
                            .unwrap_or_else(|_| Response::error("synguard is shutting down"))
                    }
                }
            };
            let mut text = serde_json::to_string(&response).unwrap_or_default();
            text.push('\n');
            let _ = tokio::time::timeout(REQUEST_TIME, write.write_all(text.as_bytes())).await;
        });
    }
}

/// One request line, read within `REQUEST_TIME` and at most `MAX_REQUEST` bytes long.
async fn read_request(read: OwnedReadHalf) -> Result<Request, String> {
    let mut line = Vec::new();
    let mut reader = AsyncBufReader::new(read.take(MAX_REQUEST as u64 + 1));
    match tokio::time::timeout(REQUEST_TIME, reader.read_until(b'\n', &mut line)).await {
        Err(_) => {
            return Err(format!(
                "no complete request within {} s",
                REQUEST_TIME.as_secs()
            ));
        }
        Ok(Err(e)) => return Err(format!("reading the request failed: {e}")),
        Ok(Ok(_)) => {}
    }
    if line.len() > MAX_REQUEST {
        return Err(format!(
            "request longer than {} KiB refused",
            MAX_REQUEST / 1024
        ));
    }
    let line = std::str::from_utf8(&line).map_err(|_| "malformed request: not UTF-8")?;
    decode_request(line)
}

/// Sends one request to the daemon on `iface` (or the only one running, without `iface`) and
/// returns its reply, of the type the request implies; a refusal is an error with the
/// daemon's reason.
pub fn request<T: DeserializeOwned>(
    state_dir: &Path,
    iface: Option<&str>,
    request: &Request,
) -> Result<T, Error> {
    let path = match iface {
        Some(iface) => socket_path(state_dir, iface),
        None => only_socket(state_dir)?,
    };
    let mut stream = StdUnixStream::connect(&path).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                "permission denied: the control socket is for root and its group".to_string()
            }
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                "no synguard is running there (start one with `synguard run`)".to_string()
            }
            _ => e.to_string(),
        };
        Error::Control {
            reason: "cannot reach",
            path: path.clone(),
            detail: Some(hint),
        }
    })?;
    let fail = |reason: &'static str, e: &dyn std::fmt::Display| Error::Control {
        reason,
        path: path.clone(),
        detail: Some(e.to_string()),
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| fail("cannot set a timeout on", &e))?;
    let envelope = Envelope {
        version: PROTOCOL_VERSION,
        request: request.clone(),
    };
    let mut text =
        serde_json::to_string(&envelope).map_err(|e| fail("cannot encode a request for", &e))?;
    text.push('\n');
    stream
        .write_all(text.as_bytes())
        .map_err(|e| fail("sending failed to", &e))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| fail("reading failed from", &e))?;
    let response: Response<T> =
        serde_json::from_str(&line).map_err(|e| fail("malformed response from", &e))?;
    match (response.ok, response.data) {
        (true, Some(data)) => Ok(data),
        (true, None) => Err(Error::Control {
            reason: "empty response from",
            path,
            detail: None,
        }),
        (false, _) => Err(Error::Refused(
            response.error.unwrap_or_else(|| "refused".into()),
        )),
    }
}

/// The one control socket in `state_dir`; an error naming the choices if there are several.
fn only_socket(state_dir: &Path) -> Result<PathBuf, Error> {
    let sockets: Vec<PathBuf> = std::fs::read_dir(state_dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("control-") && n.ends_with(".sock"))
                })
                .collect()
        })
        .unwrap_or_default();
    match sockets.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::NotRunning {
            state_dir: state_dir.to_path_buf(),
        }),
        several => Err(Error::SeveralRunning {
            ifaces: several
                .iter()
                .filter_map(|p| {
                    p.file_name()?
                        .to_str()?
                        .strip_prefix("control-")?
                        .strip_suffix(".sock")
                })
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}
