//! `cargo xtask picture`: what a SYN flood looks like in the Grafana dashboard, drawn from the
//! data of a real lab run. synguard runs in `auto` mode with a small deny list; a real
//! Prometheus scrapes it every second; a client makes requests throughout; a spoofed flood of
//! 100k SYN/s runs in the middle. The dashboard's own queries are then evaluated over the run
//! and drawn as an SVG (docs/attack.svg), one chart per panel.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use nix::sys::signal::Signal;
use serde_json::Value;
use synguard_lab::{HttpServer, Lab, Prometheus, SynShape, Synguard, run_legit_clients, syn_flood};

const CALM: Duration = Duration::from_secs(15);
const FLOOD: Duration = Duration::from_secs(15);
const FLOOD_RATE: u64 = 100_000;
/// The panels drawn, by title, from deploy/grafana/synguard.json.
const PANELS: [&str; 5] = [
    "Attack state",
    "SYNs by action",
    "Cookie validation",
    "Drops by reason",
    "New connections",
];

fn main() -> Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "docs/attack.svg".into());
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/synguard.json"
    ))?)?;

    let lab = Lab::new()?;
    let _http = HttpServer::start(&lab.server, 80)?;
    let sg = Synguard::start(
        &lab.server,
        &[
            "--mode",
            "auto",
            "--auto-threshold",
            "20000",
            "--deny",
            "198.18.200.0/24",
        ],
    )?;
    let prometheus = Prometheus::start(&lab.server, sg.metrics_addr, Duration::from_secs(1))?;
    let target: SocketAddr = (lab.server.ipv4, 80).into();
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };

    eprintln!("recording: {CALM:?} calm, {FLOOD:?} of {FLOOD_RATE} SYN/s, {CALM:?} calm");
    let start = now();
    thread::scope(|scope| -> Result<()> {
        let legit = scope.spawn(|| {
            let total = CALM * 2 + FLOOD;
            run_legit_clients(
                &lab.client,
                target,
                (total.as_millis() / 10) as u32,
                Duration::from_millis(10),
                Duration::from_secs(1),
            )
        });
        thread::sleep(CALM);
        syn_flood(
            &lab,
            80,
            FLOOD_RATE * FLOOD.as_secs(),
            Some(FLOOD_RATE),
            SynShape::Bare,
            FLOOD * 2,
        )?;
        let report = legit.join().expect("legit clients")?;
        eprintln!(
            "legit requests: {}/{} completed",
            report.succeeded, report.attempted
        );
        Ok(())
    })?;
    // Let the last scrapes land.
    thread::sleep(Duration::from_secs(3));
    let end = now();

    let mut charts = Vec::new();
    for title in PANELS {
        let panel = dashboard["panels"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["title"] == title))
            .with_context(|| format!("no panel {title:?}"))?;
        let mut lines = Vec::new();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_default()
                .replace("$interface", ".*")
                .replace("$__rate_interval", "4s");
            let legend = target["legendFormat"].as_str().unwrap_or(title);
            for (labels, points) in prometheus.query_range(&expr, start, end, 1.0)? {
                let name = fill_legend(legend, &labels);
                let points: Vec<(f64, f64)> =
                    points.into_iter().map(|(t, v)| (t - start, v)).collect();
                lines.push((name, points));
            }
        }
        charts.push((title, lines));
    }
    sg.stop(Signal::SIGTERM)?;
    let svg = render(
        &charts,
        end - start,
        CALM.as_secs_f64(),
        FLOOD.as_secs_f64(),
    );
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, svg)?;
    eprintln!("wrote {out}");
    Ok(())
}

/// `{{label}}` in a legend, filled from the series' labels.
fn fill_legend(legend: &str, labels: &Value) -> String {
    let mut text = legend.to_string();
    if let Some(map) = labels.as_object() {
        for (key, value) in map {
            text = text.replace(
                &format!("{{{{{key}}}}}"),
                value.as_str().unwrap_or_default(),
            );
        }
    }
    text
}

const WIDTH: f64 = 820.0;
const CHART_HEIGHT: f64 = 150.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

type Chart<'a> = (&'a str, Vec<(String, Vec<(f64, f64)>)>);

fn render(charts: &[Chart], duration: f64, calm: f64, flood: f64) -> String {
    let height = 40.0 + charts.len() as f64 * (CHART_HEIGHT + 40.0);
    let plot_w = WIDTH - LEFT - RIGHT;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"22\" font-size=\"14\" font-weight=\"bold\">synguard during a \
         {}k SYN/s spoofed flood (lab run, Prometheus data, dashboard queries)</text>\n",
        FLOOD_RATE / 1000
    );
    for (i, (title, lines)) in charts.iter().enumerate() {
        let top = 40.0 + i as f64 * (CHART_HEIGHT + 40.0) + 20.0;
        let max = lines
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(_, v)| *v))
            .fold(0.0f64, f64::max)
            .max(1.0);
        let x = |t: f64| LEFT + t / duration * plot_w;
        let y = |v: f64| top + CHART_HEIGHT - v / max * CHART_HEIGHT;
        let _ = writeln!(
            svg,
            "<text x=\"{LEFT}\" y=\"{}\" font-weight=\"bold\">{title}</text>\n\
             <rect x=\"{}\" y=\"{top}\" width=\"{}\" height=\"{CHART_HEIGHT}\" fill=\"#fde0dc\"/>\n\
             <rect x=\"{LEFT}\" y=\"{top}\" width=\"{plot_w}\" height=\"{CHART_HEIGHT}\" \
             fill=\"none\" stroke=\"#999\"/>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>",
            top - 6.0,
            x(calm),
            x(calm + flood) - x(calm),
            LEFT - 4.0,
            top + 10.0,
            human(max),
            LEFT - 4.0,
            top + CHART_HEIGHT,
        );
        for t in (0..=duration as u64).step_by(10) {
            let _ = writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{t} s</text>",
                x(t as f64),
                top + CHART_HEIGHT + 13.0
            );
        }
        for (j, (name, points)) in lines.iter().enumerate() {
            let color = COLORS[j % COLORS.len()];
            let path: Vec<String> = points
                .iter()
                .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
                .collect();
            let _ = writeln!(
                svg,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>\n\
                 <rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{color}\"/>\n\
                 <text x=\"{}\" y=\"{}\">{}</text>",
                path.join(" "),
                WIDTH - RIGHT + 10.0,
                top + 4.0 + j as f64 * 16.0,
                WIDTH - RIGHT + 24.0,
                top + 13.0 + j as f64 * 16.0,
                escape(name)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
