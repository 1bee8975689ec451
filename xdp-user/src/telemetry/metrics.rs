//! Prometheus metrics, read from the XDP program's per-CPU counters at scrape time, and the
//! HTTP endpoint that serves them.

use std::{future::Future, io, sync::Arc};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{Html, IntoResponse},
    routing::get,
};
use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
    core::{Collector, Desc},
    proto::MetricFamily,
};
use std::sync::Mutex;

use synguard_common::{Action, Class, Mode, Reason};
use tokio::net::TcpListener;
use tracing::warn;

use crate::{
    Error,
    datapath::handshakes::HandshakeMaps,
    datapath::loader::Attachment,
    datapath::maps::{ControlMaps, StatsMap},
    sync::lock,
    telemetry::events::Events,
    telemetry::ops::OperationsCollector,
};

/// Metrics of one attached interface, read from its stats map on every scrape.
struct InterfaceCollector {
    iface: String,
    stats: Arc<StatsMap>,
    handshakes: Arc<Mutex<HandshakeMaps>>,
    control: Arc<Mutex<ControlMaps>>,
    read_errors: IntCounter,
    // Templates: they give the descriptors, and each scrape fills fresh copies.
    packets: IntCounterVec,
    bytes: IntCounterVec,
    decisions: IntCounterVec,
    mode: IntGaugeVec,
    under_attack: IntGauge,
    sources_metered: IntCounter,
    threshold: IntGauge,
    answered: IntCounterVec,
    completed: IntCounterVec,
}

fn answered_vec(iface: &str) -> IntCounterVec {
    IntCounterVec::new(
        Opts::new(
            "synguard_handshakes_answered_total",
            "SYN-ACKs sent from XDP, by protected port (each listening port up to 64, then \
             `other`).",
        )
        .const_label("interface", iface),
        &["port"],
    )
    .expect("valid metric definition")
}

fn completed_vec(iface: &str) -> IntCounterVec {
    IntCounterVec::new(
        Opts::new(
            "synguard_handshakes_completed_total",
            "ACKs that came back with a valid cookie, by port: connections the kernel made \
             from a cookie. Over the SYN-ACKs sent, near 1 for real clients, near 0 for a \
             spoofed flood.",
        )
        .const_label("interface", iface),
        &["port"],
    )
    .expect("valid metric definition")
}

fn decisions_vec(iface: &str) -> IntCounterVec {
    IntCounterVec::new(
        Opts::new(
            "synguard_decisions_total",
            "SYNs and ACKs to protected ports, by what was decided and why.",
        )
        .const_label("interface", iface),
        &["reason"],
    )
    .expect("valid metric definition")
}

fn mode_vec(iface: &str) -> IntGaugeVec {
    IntGaugeVec::new(
        Opts::new(
            "synguard_mode",
            "1 for the mode in force (off, monitor, cookie, auto), 0 for the others.",
        )
        .const_label("interface", iface),
        &["mode"],
    )
    .expect("valid metric definition")
}

fn under_attack_gauge(iface: &str) -> IntGauge {
    IntGauge::with_opts(
        Opts::new(
            "synguard_under_attack",
            "1 while SYNs are answered with cookies: always in cookie mode, above the \
             threshold in auto mode.",
        )
        .const_label("interface", iface),
    )
    .expect("valid metric definition")
}

fn packets_vec(iface: &str) -> IntCounterVec {
    IntCounterVec::new(
        Opts::new(
            "synguard_packets_total",
            "Packets seen by the XDP program, by class and by the action taken.",
        )
        .const_label("interface", iface),
        &["class", "action"],
    )
    .expect("valid metric definition")
}

fn bytes_vec(iface: &str) -> IntCounterVec {
    IntCounterVec::new(
        Opts::new(
            "synguard_bytes_total",
            "Bytes (whole frames) seen by the XDP program, by class and by the action taken.",
        )
        .const_label("interface", iface),
        &["class", "action"],
    )
    .expect("valid metric definition")
}

fn threshold_gauge(iface: &str) -> IntGauge {
    IntGauge::with_opts(
        Opts::new(
            "synguard_auto_threshold_syn_per_second",
            "The SYN rate at which auto mode answers with cookies: as set, or as learned from \
             the baseline with a relative --auto-threshold.",
        )
        .const_label("interface", iface),
    )
    .expect("valid metric definition")
}

fn sources_metered_counter(iface: &str) -> IntCounter {
    IntCounter::with_opts(
        Opts::new(
            "synguard_sources_metered_total",
            "Sources that earned an exact per-source SYN bucket (--syn-rate-per-source): they \
             sent about half their limit within 134 ms. Random-source floods barely move it.",
        )
        .const_label("interface", iface),
    )
    .expect("valid metric definition")
}

impl Collector for InterfaceCollector {
    fn desc(&self) -> Vec<&Desc> {
        [
            self.packets.desc(),
            self.bytes.desc(),
            self.decisions.desc(),
            self.mode.desc(),
            self.under_attack.desc(),
            self.sources_metered.desc(),
            self.threshold.desc(),
            self.answered.desc(),
            self.completed.desc(),
        ]
        .concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let stats = match self.stats.read() {
            Ok(stats) => stats,
            Err(e) => {
                self.read_errors.inc();
                warn!(iface = %self.iface, error = %e, "scrape: reading the counters failed");
                return Vec::new();
            }
        };
        let (packets, bytes, decisions) = (
            packets_vec(&self.iface),
            bytes_vec(&self.iface),
            decisions_vec(&self.iface),
        );
        let (mode, under_attack) = (mode_vec(&self.iface), under_attack_gauge(&self.iface));
        let sources_metered = sources_metered_counter(&self.iface);
        let threshold = threshold_gauge(&self.iface);
        sources_metered.inc_by(stats.sources_metered);
        // Every class and action is exported, zeros included, so rate() works from the start.
        for class in Class::ALL {
            for action in Action::ALL {
                let labels = [class.name(), action.name()];
                packets
                    .with_label_values(&labels)
                    .inc_by(stats.packets(class, action));
                bytes
                    .with_label_values(&labels)
                    .inc_by(stats.bytes(class, action));
            }
        }
        for reason in Reason::ALL {
            decisions
                .with_label_values(&[reason.name()])
                .inc_by(stats.reason(reason));
        }
        let mut families = [
            packets.collect(),
            bytes.collect(),
            decisions.collect(),
            sources_metered.collect(),
        ]
        .concat();
        match lock(&self.handshakes).read() {
            Ok(rows) => {
                let (answered, completed) = (answered_vec(&self.iface), completed_vec(&self.iface));
                for row in rows {
                    let label = [row.label()];
                    answered.with_label_values(&label).inc_by(row.answered);
                    completed.with_label_values(&label).inc_by(row.completed);
                }
                families.extend(answered.collect());
                families.extend(completed.collect());
            }
            Err(e) => {
                self.read_errors.inc();
                warn!(iface = %self.iface, error = %e, "scrape: reading the handshake counters failed");
            }
        }
        let control = lock(&self.control);
        if let (Ok(config), Ok(auto)) = (control.config(), control.auto_summary()) {
            for m in Mode::ALL {
                mode.with_label_values(&[m.name()])
                    .set(i64::from(config.mode() == m));
            }
            let attacked = match config.mode() {
                Mode::Cookie => true,
                Mode::Auto => auto.under_attack,
                Mode::Off | Mode::Monitor => false,
            };
            under_attack.set(i64::from(attacked));
            threshold.set(i64::from(config.auto_threshold_pps));
            // Only what was read: a gauge at 0 would say "not under attack".
            families.extend(mode.collect());
            families.extend(under_attack.collect());
            families.extend(threshold.collect());
        }
        families
    }
}

/// Builds the registry for the attached interfaces, each with its events' counters.
pub fn registry(interfaces: &[(&Attachment, Arc<Events>)]) -> Result<Registry, Error> {
    let registry = Registry::new();
    let register = |collector: Box<dyn Collector>| {
        registry
            .register(collector)
            .map_err(|e| Error::Other(format!("registering metrics failed: {e}")))
    };

    let build_info = IntGaugeVec::new(
        Opts::new(
            "synguard_build_info",
            "Always 1; the labels say which synguard is running.",
        ),
        &["version"],
    )
    .expect("valid metric definition");
    build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    register(Box::new(build_info))?;

    let program = IntGaugeVec::new(
        Opts::new(
            "synguard_xdp_program_info",
            "Always 1 while synguard's XDP program is attached; the labels say where and how.",
        ),
        &["interface", "xdp_mode", "program_id"],
    )
    .expect("valid metric definition");
    for (attachment, _) in interfaces {
        program
            .with_label_values(&[
                attachment.iface(),
                attachment.mode().name(),
                &attachment.program_id().to_string(),
            ])
            .set(1);
    }
    register(Box::new(program))?;

    for (attachment, events) in interfaces {
        let iface = attachment.iface();
        let read_errors = IntCounter::with_opts(
            Opts::new(
                "synguard_map_read_errors_total",
                "Scrapes in which reading the XDP program's counters failed.",
            )
            .const_label("interface", iface),
        )
        .expect("valid metric definition");
        register(Box::new(read_errors.clone()))?;

        register(Box::new(InterfaceCollector {
            iface: iface.to_string(),
            stats: attachment.stats(),
            handshakes: attachment.handshakes(),
            control: attachment.control(),
            read_errors,
            packets: packets_vec(iface),
            bytes: bytes_vec(iface),
            decisions: decisions_vec(iface),
            mode: mode_vec(iface),
            under_attack: under_attack_gauge(iface),
            sources_metered: sources_metered_counter(iface),
            threshold: threshold_gauge(iface),
            answered: answered_vec(iface),
            completed: completed_vec(iface),
        }))?;
        register(Box::new(OperationsCollector::new(
            iface,
            attachment.program_id(),
            attachment.control(),
            attachment.lists(),
            attachment.buckets(),
            Arc::clone(events),
            attachment.fast_path_flag(),
        )))?;
    }
    Ok(registry)
}

/// Serves `/metrics`, `/healthz` and a landing page until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = Router::new()
        .route("/", get(landing))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(Arc::new(registry));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&registry.gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoder.format_type().to_string())],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain".to_string())],
            format!("encoding metrics failed: {e}\n").into_bytes(),
        ),
    }
}

async fn landing() -> Html<&'static str> {
    Html(concat!(
        "<!doctype html><title>synguard</title><h1>synguard ",
        env!("CARGO_PKG_VERSION"),
        "</h1><p><a href=\"/metrics\">/metrics</a> (Prometheus) &middot; ",
        "<a href=\"/healthz\">/healthz</a></p>\n"
    ))
}
