//! Building metric families by hand, for values read at render time (snapshots, node counters): they
//! are exposed exactly as read, and a series whose source is gone simply is not built.

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// A metric family being built: a name, its help, its type (counter or gauge) and its samples.
#[derive(Debug)]
pub(super) struct Family {
    inner: MetricFamily,
}

impl Family {
    /// An empty family; `kind` must be [`MetricType::COUNTER`] or [`MetricType::GAUGE`].
    pub(super) fn new(name: &str, help: &str, kind: MetricType) -> Self {
        let mut inner = MetricFamily::default();
        inner.set_name(name.to_owned());
        inner.set_help(help.to_owned());
        inner.set_field_type(kind);
        Self { inner }
    }

    /// Adds one sample with `labels`.
    pub(super) fn sample(mut self, labels: &[(&str, &str)], value: f64) -> Self {
        self.push(labels, value);
        self
    }

    /// Adds one sample with `labels`.
    pub(super) fn push(&mut self, labels: &[(&str, &str)], value: f64) {
        let mut metric = Metric::default();
        metric.set_label(
            labels
                .iter()
                .map(|(name, value)| {
                    let mut pair = LabelPair::default();
                    pair.set_name((*name).to_owned());
                    pair.set_value((*value).to_owned());
                    pair
                })
                .collect(),
        );
        if self.inner.get_field_type() == MetricType::COUNTER {
            let mut counter = Counter::default();
            counter.set_value(value);
            metric.set_counter(counter);
        } else {
            let mut gauge = Gauge::default();
            gauge.set_value(value);
            metric.set_gauge(gauge);
        }
        self.inner.mut_metric().push(metric);
    }

    /// Whether no sample was added (the encoder refuses empty families: skip them).
    pub(super) fn is_empty(&self) -> bool {
        self.inner.get_metric().is_empty()
    }

    /// The finished family.
    pub(super) fn build(self) -> MetricFamily {
        self.inner
    }
}

/// A counter family with one unlabelled sample.
pub(super) fn counter(name: &str, help: &str, value: u64) -> MetricFamily {
    Family::new(name, help, MetricType::COUNTER).sample(&[], value as f64).build()
}

/// A gauge family with one unlabelled sample.
pub(super) fn gauge(name: &str, help: &str, value: f64) -> MetricFamily {
    Family::new(name, help, MetricType::GAUGE).sample(&[], value).build()
}
