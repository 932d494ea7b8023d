//! The operator's Prometheus metrics (`/metrics`).

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Reconciles by resource kind and result (`ok`, `error`).
    pub reconciles: IntCounterVec,
    /// Reconcile durations by resource kind.
    pub duration: HistogramVec,
    /// Failed reconciles by resource kind and reason.
    pub failures: IntCounterVec,
    /// Objects created or changed on the API server, by kind (0 while nothing changes).
    pub writes: IntCounterVec,
    /// 1 while this replica holds the leader Lease.
    pub leader: IntGauge,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "kairos_operator_reconcile_total",
                "Reconciles by resource kind and result",
            ),
            &["kind", "result"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "kairos_operator_reconcile_duration_seconds",
                "Reconcile duration by resource kind",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["kind"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "kairos_operator_reconcile_failures_total",
                "Failed reconciles by resource kind and reason",
            ),
            &["kind", "reason"],
        )?;
        let writes = IntCounterVec::new(
            Opts::new(
                "kairos_operator_writes_total",
                "Objects created or changed on the API server, by kind",
            ),
            &["kind"],
        )?;
        let leader = IntGauge::new(
            "kairos_operator_leader",
            "1 while this replica holds the leader Lease",
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(writes.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            reconciles,
            duration,
            failures,
            writes,
            leader,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding metrics failed: {e}\n"))
    }
}
