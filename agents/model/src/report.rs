//! A service's own figures (Kiwi's DHCP server: per link, its pool, leases and
//! answers), read by the agent core at each request of `/status` and `/metrics`.
//!
//! A role attaches a [`Report`] to a [`Supervised`](crate::Supervised) service
//! ([`with_report`](crate::Supervised::with_report)); the core shows its
//! [`status`](Report::status) under the service in `/status`
//! (`services.<name>.report`) and its [`metrics`](Report::metrics) in `/metrics`, each
//! sample with the `agent` label the core adds to all of its own.

/// What a service tells about itself. Called on the status endpoint's task: it must
/// not block for long (take a lock, read counters; no I/O).
pub trait Report: Send + Sync {
    /// Shown under the service in `/status`.
    fn status(&self) -> serde_json::Value;
    /// Metric families, in the order shown. Names carry the role's prefix
    /// (`kowabunga_dhcp_`) and are distinct from every other report's.
    fn metrics(&self) -> Vec<Metric>;
}

/// Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Gauge,
    Counter,
}

impl MetricKind {
    /// As in the `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Gauge => "gauge",
            MetricKind::Counter => "counter",
        }
    }
}

/// One metric family: its name, type, help text and samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub kind: MetricKind,
    pub help: &'static str,
    pub samples: Vec<Sample>,
}

/// One sample: its labels (besides `agent`) and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: u64,
}

impl Sample {
    /// A sample without labels of its own.
    pub fn plain(value: u64) -> Self {
        Self {
            labels: Vec::new(),
            value,
        }
    }

    /// A sample with one label.
    pub fn labelled(key: &'static str, value_of_label: impl Into<String>, value: u64) -> Self {
        Self {
            labels: vec![(key, value_of_label.into())],
            value,
        }
    }
}
