//! The control socket: the daemon's server, which reads one request line per connection and
//! hands it to the main loop, and the client the CLI verbs use.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream as StdUnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::de::DeserializeOwned;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader},
    net::UnixListener,
    sync::{mpsc, oneshot},
};
use tracing::warn;

use super::protocol::{Envelope, PROTOCOL_VERSION, Reply, Request, Response, decode_request};
use crate::Error;

/// The longest request the daemon reads: CIDR lists are sent in chunks well under it.
const MAX_REQUEST: usize = 1 << 20;

/// A request for the main loop, with the channel its response goes back on.
pub type Pending = (Request, oneshot::Sender<Response<Reply>>);

/// The control socket of `iface`.
pub fn socket_path(state_dir: &Path, iface: &str) -> PathBuf {
    state_dir.join(format!("control-{iface}.sock"))
}

/// Binds the control socket. A socket file left by a killed run is replaced: the caller holds
/// the interface lock, so no live daemon owns it.
pub fn bind(path: &Path) -> Result<UnixListener, Error> {
    let fail = |e: std::io::Error| {
        Error::Other(format!(
            "cannot serve the control socket {}: {e}",
            path.display()
        ))
    };
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(fail)?;
    Ok(listener)
}

/// Accepts connections and forwards their requests to the main loop, until it is gone.
pub async fn serve(listener: UnixListener, requests: mpsc::Sender<Pending>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "control socket: accept failed");
                continue;
            }
        };
        let requests = requests.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = AsyncBufReader::new(read.take(MAX_REQUEST as u64));
            let response = match reader.read_line(&mut line).await {
                Err(e) => Response::error(format!("reading the request failed: {e}")),
                Ok(_) => match decode_request(&line) {
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
                },
            };
            let mut text = serde_json::to_string(&response).unwrap_or_default();
            text.push('\n');
            let _ = write.write_all(text.as_bytes()).await;
        });
    }
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
        Error::Other(format!("cannot reach {}: {hint}", path.display()))
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| Error::Other(e.to_string()))?;
    let envelope = Envelope {
        version: PROTOCOL_VERSION,
        request: request.clone(),
    };
    let mut text = serde_json::to_string(&envelope).map_err(|e| Error::Other(e.to_string()))?;
    text.push('\n');
    stream
        .write_all(text.as_bytes())
        .map_err(|e| Error::Other(format!("sending to {} failed: {e}", path.display())))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| Error::Other(format!("reading from {} failed: {e}", path.display())))?;
    let response: Response<T> = serde_json::from_str(&line)
        .map_err(|e| Error::Other(format!("malformed response from {}: {e}", path.display())))?;
    match (response.ok, response.data) {
        (true, Some(data)) => Ok(data),
        (true, None) => Err(Error::Other(format!(
            "empty response from {}",
            path.display()
        ))),
        (false, _) => Err(Error::Other(
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
        [] => Err(Error::Other(format!(
            "no synguard is running (no control socket in {}); start one with `synguard run`",
            state_dir.display()
        ))),
        several => Err(Error::Other(format!(
            "several interfaces are protected; choose one with --iface ({})",
            several
                .iter()
                .filter_map(|p| p
                    .file_name()?
                    .to_str()?
                    .strip_prefix("control-")?
                    .strip_suffix(".sock"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
