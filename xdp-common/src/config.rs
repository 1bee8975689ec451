//! The run-time configuration the controller writes into a one-slot array map, and the XDP
//! program reads on every packet. Changing it needs no reload.

/// What synguard does with SYNs to protected ports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Pass everything, count it.
    Off = 0,
    /// Count what `Cookie` would do, change nothing.
    Monitor = 1,
    /// Answer every SYN to a protected port with a SYN cookie from XDP; drop forged ACKs.
    Cookie = 2,
    /// Like `Off` while the SYN rate to protected ports is below the threshold, like `Cookie`
    /// above it, with hysteresis.
    Auto = 3,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Off, Mode::Monitor, Mode::Cookie, Mode::Auto];

    pub const fn from_u32(value: u32) -> Mode {
        match value {
            1 => Mode::Monitor,
            2 => Mode::Cookie,
            3 => Mode::Auto,
            _ => Mode::Off,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Monitor => "monitor",
            Mode::Cookie => "cookie",
            Mode::Auto => "auto",
        }
    }
}

/// `Config::flags` bits.
pub mod flags {
    /// Every port is protected (SYNs to ports without a listener still go to the kernel).
    /// Otherwise only the ports set in the ports map are.
    pub const ALL_PORTS: u32 = 1 << 0;
    /// Put the timestamp option in SYN-ACKs, with the client's options encoded in its low bits
    /// (the operator's `--cookie-timestamps`). Needs `net.ipv4.tcp_timestamps=2` on the server,
    /// which synguard sets while it answers. What else a SYN-ACK offers follows the host's own
    /// sysctls (`crate::promise::HostFacts`).
    pub const TIMESTAMPS: u32 = 1 << 1;
    /// The allow/deny lists have entries: look sources up in them.
    pub const LISTS: u32 = 1 << 5;
}

/// Values in the allow/deny LPM tries.
pub mod list {
    /// The source bypasses synguard: passed, no cookies, no limits.
    pub const ALLOW: u32 = 1;
    /// The source is dropped.
    pub const DENY: u32 = 2;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// A [`Mode`] value.
    pub mode: u32,
    /// [`flags`] bits.
    pub flags: u32,
    /// `Auto` switches to cookies when the SYN rate to protected ports reaches this many per
    /// second, and back when it stays below half of it for `auto_hold_ms`.
    pub auto_threshold_pps: u32,
    pub auto_hold_ms: u32,
    /// Global caps, per second, 0 for none: SYNs passed to the kernel, and SYN-ACKs sent from
    /// XDP (which bounds the backscatter aimed at spoofed sources). Over a cap the SYN is
    /// dropped.
    pub syn_pass_cap_pps: u32,
    pub synack_cap_pps: u32,
    /// The per-source SYN limit (`crate::limit`): ns between conforming SYNs, 0 for no limit.
    pub source_interval_ns: u32,
    /// The sketch estimate at which a source gets its own bucket (`limit::promote_threshold`).
    pub source_promote: u32,
    /// Prefix lengths that make one source: 32 and 128 meter each address.
    pub source_prefix_v4: u32,
    pub source_prefix_v6: u32,
    /// Seeds the sketch's hash, chosen at random by the controller at start.
    pub sketch_seed: u32,
    /// `Auto` also switches to cookies when one protected port alone gets this many SYNs per
    /// second (0: no per-port threshold), with the same hysteresis.
    pub auto_port_threshold_pps: u32,
    /// How far ahead of now a source's bucket may run: burst x interval.
    pub source_burst_ns: u64,
}

const _: () = assert!(size_of::<Config>() == 56);

impl Config {
    /// `synguard run`'s defaults. What a SYN-ACK promises (window scale, MSS, window, TTL, the
    /// options) is not configured: it follows each listener and the host
    /// (`crate::promise`).
    pub const DEFAULT: Config = Config {
        mode: Mode::Auto as u32,
        flags: flags::ALL_PORTS | flags::TIMESTAMPS,
        auto_threshold_pps: 5000,
        auto_hold_ms: 1000,
        syn_pass_cap_pps: 0,
        synack_cap_pps: 0,
        source_interval_ns: 0,
        source_promote: 1,
        source_prefix_v4: 32,
        source_prefix_v6: 128,
        sketch_seed: 0,
        auto_port_threshold_pps: 0,
        source_burst_ns: 0,
    };

    pub fn mode(&self) -> Mode {
        Mode::from_u32(self.mode)
    }

    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

/// `Auto` mode's rate estimate, one per CPU (a per-CPU array): each CPU counts its own SYNs
/// and, when it closes a window, sums every CPU's latest rate; no CPU writes another's slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AutoState {
    /// Start of this CPU's current window, in ns of CLOCK_MONOTONIC (bpf_ktime_get_ns).
    pub window_start_ns: u64,
    /// SYNs to protected ports this CPU saw in the current window.
    pub window_syns: u64,
    /// This CPU's SYN rate over its last closed window, per second, and when it closed.
    pub rate_pps: u64,
    pub rate_at_ns: u64,
    /// The all-CPU rate this CPU computed at its last decision.
    pub total_rate_pps: u64,
    /// SYNs to protected ports this CPU has seen, ever: the controller's baseline reads it.
    pub syns: u64,
}

const _: () = assert!(size_of::<AutoState>() == 48);

/// Whether the host is under a SYN flood: one for all CPUs (an array map), changed only with
/// atomic instructions, so exactly one CPU wins each start and each stop, and reports it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttackState {
    /// 1 while SYNs to protected ports are answered with cookies.
    pub active: u64,
    /// When the current (or last) attack started.
    pub started_ns: u64,
    /// When the all-CPU rate was last at or above half the threshold.
    pub last_busy_ns: u64,
    /// The highest all-CPU rate seen since the attack started.
    pub peak_pps: u64,
}

/// What the data path reports through the events ring buffer: an attack's start or end.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttackEvent {
    /// [`event::START`] or [`event::STOP`].
    pub kind: u32,
    /// The threshold in force, SYN/s: the overall one, or the per-port one if `port` is set.
    pub threshold_pps: u32,
    /// A start caused by one port's rate: that port; 0 for the overall rate.
    pub port: u32,
    pub reserved: u32,
    /// When, in ns of CLOCK_MONOTONIC.
    pub at_ns: u64,
    /// The all-CPU SYN rate when it was decided.
    pub rate_pps: u64,
    /// The attack's peak rate (at a start: the rate that started it).
    pub peak_pps: u64,
    /// When the attack started.
    pub started_ns: u64,
}

/// [`AttackEvent::kind`] values.
pub mod event {
    pub const START: u32 = 1;
    pub const STOP: u32 = 2;
}

/// Sources of recent SYNs, sampled during an attack for the controller's "top sources": one
/// ring per CPU (a per-CPU array of one), overwritten round and round.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceSamples {
    /// Samples taken so far; the next goes to `next % SAMPLE_SLOTS`.
    pub next: u64,
    pub keys: [crate::limit::SourceKey; SAMPLE_SLOTS],
}

pub const SAMPLE_SLOTS: usize = 64;

/// One CPU's share of a global cap (`xdp-ebpf/src/caps.rs`), one per cap in a per-CPU array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapState {
    pub window_start_ns: u64,
    /// Events this CPU saw in the current window, admitted or not.
    pub demand: u64,
    /// Events admitted in the current window, and how many this CPU may admit in it.
    pub used: u64,
    pub budget: u64,
    /// Demand in this CPU's last closed window, and when it closed: what the others read.
    pub last_demand: u64,
    pub last_at_ns: u64,
}

const _: () = assert!(size_of::<CapState>() == 48);

/// Indexes into the caps map.
pub mod cap {
    pub const SYN_PASS: u32 = 0;
    pub const SYNACK: u32 = 1;
    pub const COUNT: u32 = 2;
}

/// Length of a cap's window; budgets are re-split among CPUs at each.
pub const CAP_WINDOW_NS: u64 = 10_000_000;

/// Events a cap of `cap_pps` allows in one window.
pub const fn window_budget(cap_pps: u32) -> u64 {
    cap_pps as u64 * CAP_WINDOW_NS / 1_000_000_000
}

/// One CPU's budget for its next window, from every CPU's demand in their last windows. When
/// the cap binds (total demand at or above the window's budget), the budget is split in
/// proportion to demand. When it does not, each CPU gets its own demand plus an equal share of
/// the slack, so that a CPU idle in the last window still has room and nothing under the cap
/// is dropped; either way the budgets add up to at most the window's.
pub const fn cpu_budget(window_budget: u64, my_demand: u64, total_demand: u64, cpus: u64) -> u64 {
    if total_demand >= window_budget {
        if total_demand == 0 {
            return 0;
        }
        // Both factors are bounded (a window's budget is under 2^32 / 100, demand per window
        // far under 2^32), so the product fits.
        return window_budget * my_demand / total_demand;
    }
    let cpus = if cpus == 0 { 1 } else { cpus };
    my_demand + (window_budget - total_demand) / cpus
}

/// Per-port SYN counts (`PORT_RATES_MAP`) are kept over windows of 2^24 ns (16.8 ms), in
/// cells that pack the window and the count, like the per-source sketch's.
pub const PORT_WINDOW_SHIFT: u32 = 24;
pub const PORT_WINDOW_NS: u64 = 1 << PORT_WINDOW_SHIFT;

/// SYNs one port may get in a window before `auto_port_threshold_pps` is reached (at least 1).
pub const fn port_window_threshold(pps: u32) -> u64 {
    let per_window = pps as u64 * PORT_WINDOW_NS / 1_000_000_000;
    if per_window == 0 { 1 } else { per_window }
}

/// Length of one `Auto` rate window: short enough to switch within milliseconds.
pub const AUTO_WINDOW_NS: u64 = 10_000_000;

/// A CPU's rate older than this is left out of the sum: that CPU has not seen a SYN since.
pub const AUTO_STALE_NS: u64 = 100_000_000;

#[cfg(feature = "user")]
// SAFETY: repr(C), u32 fields then one u64 at offset 48, no padding (size asserted above).
unsafe impl aya::Pod for Config {}
#[cfg(feature = "user")]
// SAFETY: repr(C), only u64 fields.
unsafe impl aya::Pod for AutoState {}
#[cfg(feature = "user")]
// SAFETY: repr(C), only u64 fields.
unsafe impl aya::Pod for AttackState {}
#[cfg(feature = "user")]
// SAFETY: repr(C), two u32 then u64s: no padding.
unsafe impl aya::Pod for AttackEvent {}
#[cfg(feature = "user")]
// SAFETY: repr(C), a u64 then byte arrays (size a multiple of 8): no padding.
unsafe impl aya::Pod for SourceSamples {}
#[cfg(feature = "user")]
// SAFETY: repr(C), only u64 fields.
unsafe impl aya::Pod for CapState {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_split_by_demand_and_add_up() {
        let window = window_budget(10_000);
        assert_eq!(window, 100, "10,000/s is 100 per 10 ms");
        // The cap binds: shares in proportion to demand.
        assert_eq!(
            cpu_budget(window, 500, 500, 2),
            100,
            "one busy CPU gets all of it"
        );
        assert_eq!(
            cpu_budget(window, 0, 500, 2),
            0,
            "an idle CPU gets nothing this window"
        );
        let shares = [300u64, 100, 100];
        let total: u64 = shares.iter().sum();
        let budgets = shares.map(|d| cpu_budget(window, d, total, 3));
        assert_eq!(budgets, [60, 20, 20]);
        assert!(
            budgets.iter().sum::<u64>() <= window,
            "never more than the cap"
        );
        // It does not: own demand plus a share of the slack, for idle CPUs too.
        assert_eq!(cpu_budget(window, 0, 0, 2), 50, "nobody busy yet");
        let shares = [30u64, 0];
        let budgets = shares.map(|d| cpu_budget(window, d, 30, 2));
        assert_eq!(budgets, [65, 35]);
        assert_eq!(budgets.iter().sum::<u64>(), window);
        assert_eq!(cpu_budget(window, 10, 10, 0), 100, "no CPU count: one CPU");
        assert_eq!(window_budget(0), 0);
        assert_eq!(window_budget(u32::MAX), 42_949_672);
    }
}
