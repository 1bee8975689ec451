//! The operational metrics, next to the traffic counters of `metrics`: configured limits,
//! attacks and time under attack, events, how full the maps are against their capacity, and
//! the program's run time from the kernel's BPF statistics (`kernel.bpf_stats_enabled=1`).

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use prometheus::{
    Counter, Gauge, Opts,
    core::{Collector, Desc},
    proto::MetricFamily,
};
use synguard_common::{Config, LIST_MAX_ENTRIES, SOURCE_BUCKETS, config::list};

use crate::{
    datapath::maps::{ControlMaps, ListMaps, SourceBuckets},
    host::sysctl,
    sync::lock,
    telemetry::events::{Event, Events},
};

/// One metric family: how to describe it, and a fresh copy with a value on each scrape.
enum Family {
    Gauge(&'static str, &'static str, fn(&Snapshot) -> f64),
    Counter(&'static str, &'static str, fn(&Snapshot) -> f64),
}

/// What one scrape reads.
struct Snapshot {
    config: Option<Config>,
    events: [u64; Event::ALL.len()],
    seconds_under_attack: f64,
    /// (allow v4+v6, deny v4+v6) entries.
    lists: Option<(usize, usize)>,
    buckets: usize,
    run_seconds: f64,
    runs: u64,
    bpf_stats: bool,
    fast_path: bool,
}

fn per_second(interval_ns: u32) -> f64 {
    if interval_ns == 0 {
        0.0
    } else {
        (1e9 / f64::from(interval_ns)).round()
    }
}

const FAMILIES: &[Family] = &[
    Family::Gauge(
        "synguard_syn_rate_per_source_limit",
        "SYNs per second each source may send (--syn-rate-per-source); 0 for no limit.",
        |s| s.config.map_or(0.0, |c| per_second(c.source_interval_ns)),
    ),
    Family::Gauge(
        "synguard_syn_burst_per_source_limit",
        "SYNs a source may send at once (--syn-burst-per-source).",
        |s| {
            s.config.map_or(0.0, |c| match c.source_interval_ns {
                0 => 0.0,
                i => (c.source_burst_ns / u64::from(i)) as f64,
            })
        },
    ),
    Family::Gauge(
        "synguard_syn_pass_cap_per_second",
        "Cap on SYNs passed to the kernel per second (--max-syn-pass-rate); 0 for none.",
        |s| s.config.map_or(0.0, |c| f64::from(c.syn_pass_cap_pps)),
    ),
    Family::Gauge(
        "synguard_synack_cap_per_second",
        "Cap on SYN-ACKs sent per second (--max-synack-rate); 0 for none.",
        |s| s.config.map_or(0.0, |c| f64::from(c.synack_cap_pps)),
    ),
    Family::Gauge(
        "synguard_auto_port_threshold_syn_per_second",
        "SYNs per second to one port at which auto mode answers with cookies; 0 for none.",
        |s| {
            s.config
                .map_or(0.0, |c| f64::from(c.auto_port_threshold_pps))
        },
    ),
    Family::Counter(
        "synguard_attacks_total",
        "SYN floods auto mode answered with cookies.",
        |s| s.events[Event::AttackStarted as usize] as f64,
    ),
    Family::Counter(
        "synguard_under_attack_seconds_total",
        "Time spent answering SYN floods in auto mode, the one going on included.",
        |s| s.seconds_under_attack,
    ),
    Family::Gauge(
        "synguard_allow_list_entries",
        "CIDRs on the allow list (capacity: synguard_list_capacity_entries per family).",
        |s| s.lists.map_or(0.0, |l| l.0 as f64),
    ),
    Family::Gauge(
        "synguard_deny_list_entries",
        "CIDRs on the deny list.",
        |s| s.lists.map_or(0.0, |l| l.1 as f64),
    ),
    Family::Gauge(
        "synguard_list_capacity_entries",
        "Entries each of the two list maps (IPv4, IPv6) can hold.",
        |_| f64::from(LIST_MAX_ENTRIES),
    ),
    Family::Gauge(
        "synguard_source_buckets",
        "Sources holding an exact per-source bucket now.",
        |s| s.buckets as f64,
    ),
    Family::Gauge(
        "synguard_source_buckets_capacity",
        "Buckets the per-source table can hold (least recently used ones are evicted).",
        |_| f64::from(SOURCE_BUCKETS),
    ),
    Family::Counter(
        "synguard_program_run_seconds_total",
        "Time the kernel spent running the XDP program, from BPF statistics; stays at 0 unless \
         kernel.bpf_stats_enabled=1.",
        |s| s.run_seconds,
    ),
    Family::Counter(
        "synguard_program_runs_total",
        "Runs of the XDP program, from BPF statistics (kernel.bpf_stats_enabled=1).",
        |s| s.runs as f64,
    ),
    Family::Gauge(
        "synguard_fast_path",
        "1 when SYNs from sources that own no socket are answered without the socket lookup \
         (the owner filter is built and kept); 0 when every SYN gets the lookup.",
        |s| f64::from(u8::from(s.fast_path)),
    ),
    Family::Gauge(
        "synguard_bpf_stats_enabled",
        "1 if kernel.bpf_stats_enabled is on, so that the program's run time is measured.",
        |s| f64::from(u8::from(s.bpf_stats)),
    ),
];

pub struct OperationsCollector {
    iface: String,
    program_id: u32,
    control: Arc<Mutex<ControlMaps>>,
    lists: Arc<Mutex<ListMaps>>,
    buckets: Arc<SourceBuckets>,
    events: Arc<Events>,
    fast_path: Arc<AtomicBool>,
    descs: Vec<Desc>,
    event_counter: prometheus::IntCounterVec,
}

fn event_counter(iface: &str) -> prometheus::IntCounterVec {
    prometheus::IntCounterVec::new(
        Opts::new(
            "synguard_events_total",
            "What happened to synguard: attacks started and ended, mode and configuration \
             changes, refused reloads.",
        )
        .const_label("interface", iface),
        &["event"],
    )
    .expect("valid metric definition")
}

impl OperationsCollector {
    pub fn new(
        iface: &str,
        program_id: u32,
        control: Arc<Mutex<ControlMaps>>,
        lists: Arc<Mutex<ListMaps>>,
        buckets: Arc<SourceBuckets>,
        events: Arc<Events>,
        fast_path: Arc<AtomicBool>,
    ) -> OperationsCollector {
        let mut collector = OperationsCollector {
            iface: iface.to_string(),
            program_id,
            control,
            lists,
            buckets,
            events,
            fast_path,
            descs: Vec::new(),
            event_counter: event_counter(iface),
        };
        let empty = collector.families(&Snapshot {
            config: None,
            events: [0; Event::ALL.len()],
            seconds_under_attack: 0.0,
            lists: None,
            buckets: 0,
            run_seconds: 0.0,
            runs: 0,
            bpf_stats: false,
            fast_path: false,
        });
        collector.descs = empty
            .iter()
            .flat_map(|metric| metric.desc().into_iter().cloned())
            .chain(collector.event_counter.desc().into_iter().cloned())
            .collect();
        collector
    }

    fn families(&self, snapshot: &Snapshot) -> Vec<Box<dyn Collector>> {
        FAMILIES
            .iter()
            .map(|family| -> Box<dyn Collector> {
                match family {
                    Family::Gauge(name, help, value) => {
                        let gauge = Gauge::with_opts(
                            Opts::new(*name, *help).const_label("interface", &self.iface),
                        )
                        .expect("valid metric definition");
                        gauge.set(value(snapshot));
                        Box::new(gauge)
                    }
                    Family::Counter(name, help, value) => {
                        let counter = Counter::with_opts(
                            Opts::new(*name, *help).const_label("interface", &self.iface),
                        )
                        .expect("valid metric definition");
                        counter.inc_by(value(snapshot).max(0.0));
                        Box::new(counter)
                    }
                }
            })
            .collect()
    }

    fn snapshot(&self) -> Snapshot {
        let config = lock(&self.control).config().ok();
        let lists = lock(&self.lists).entries().ok().map(|entries| {
            let count = |v| entries.iter().filter(|(_, verdict)| *verdict == v).count();
            (count(list::ALLOW), count(list::DENY))
        });
        let (run_seconds, runs) = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .find(|info| info.id() == self.program_id)
            .map_or((0.0, 0), |info| {
                (info.run_time().as_secs_f64(), info.run_count())
            });
        Snapshot {
            config,
            events: Event::ALL.map(|e| self.events.count(e)),
            seconds_under_attack: self.events.seconds_under_attack(),
            lists,
            buckets: self.buckets.len(),
            run_seconds,
            runs,
            bpf_stats: sysctl::read("kernel.bpf_stats_enabled").is_ok_and(|v| v == "1"),
            fast_path: self.fast_path.load(Ordering::Relaxed),
        }
    }
}

impl Collector for OperationsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let snapshot = self.snapshot();
        let events = event_counter(&self.iface);
        for event in Event::ALL {
            events
                .with_label_values(&[event.name()])
                .inc_by(snapshot.events[event as usize]);
        }
        self.families(&snapshot)
            .iter()
            .flat_map(|metric| metric.collect())
            .chain(events.collect())
            .collect()
    }
}
