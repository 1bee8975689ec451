//! `synguard run`: check, attach, serve metrics until told to stop, detach.

use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};
use tracing::info;

use crate::{Error, cli::RunArgs, loader::Attachment, metrics, preflight};

pub async fn run(args: &RunArgs) -> Result<(), Error> {
    // Everything that can fail without side effects comes first, so a bad invocation leaves the
    // interface as it found it.
    preflight::check_capabilities()?;
    preflight::interface_index(&args.iface)?;
    let listener = TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|e| Error::metrics_addr(args.metrics_addr, &e))?;
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| Error::Other(format!("installing the SIGINT handler failed: {e}")))?;
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| Error::Other(format!("installing the SIGTERM handler failed: {e}")))?;

    let attachment = Attachment::attach(&args.iface, args.xdp_mode)?;
    info!(
        iface = %args.iface,
        xdp_mode = args.xdp_mode.name(),
        program_id = attachment.program_id(),
        "attached"
    );
    let registry = metrics::registry(&attachment)?;
    info!("serving metrics on http://{}/metrics", args.metrics_addr);

    let shutdown = async move {
        let name = tokio::select! {
            _ = sigint.recv() => "SIGINT",
            _ = sigterm.recv() => "SIGTERM",
        };
        info!(signal = name, "shutting down");
    };
    let served = metrics::serve(listener, registry, shutdown).await;

    let iface = attachment.iface().to_string();
    attachment.detach();
    info!(%iface, "detached");
    served.map_err(|e| Error::Other(format!("the metrics server failed: {e}")))
}
