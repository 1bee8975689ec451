//! The test lab: a server and a client network namespace joined by a veth pair, with real
//! sockets, real packets and the real kernel.
//!
//! Safety rule (docs/design.md): traffic only inside namespaces the lab creates, with
//! addresses from 198.18.0.0/15 and fd00:198:18::/64. The veth pair is created inside the
//! namespaces, never in the caller's, and everything is removed when the [`Lab`] is dropped,
//! during a panic too. Labs left behind by a killed process are removed by the next one.

mod flood;
mod http;
mod metrics_text;
mod netns;
mod process;
mod prometheus;
pub mod soak;
mod synguard;

pub use flood::{FLOOD_SOURCES, FloodReport, SynShape, syn_flood, syn_flood_from, syn_flood_over};
pub use http::{HttpServer, LegitReport, http_get, run_legit_clients, run_legit_for};
pub use metrics_text::MetricsText;
pub use netns::{FLOOD_V6, LAB_BPFFS, Lab, Netns, SPOOFED_V4, remove_labs_of, require_root};
pub use process::{Process, run_bounded};
pub use prometheus::{Prometheus, Series};
pub use synguard::{Synguard, synguard_bin};
