//! What synguard tells its operators: Prometheus metrics (traffic counters and operational
//! gauges) and the events they count.

pub mod events;
pub mod metrics;
pub mod ops;
