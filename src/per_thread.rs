//! Values kept once per thread. Each thread writes only its own, so the two workers do not
//! pass a cache line back and forth on every request (a lock word, a counter); readers (a
//! scrape, the dashboard) visit them all. Measured on the pay page: the shared lifecycle
//! counter, store-latency histogram and event history cost it several per cent.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Histogram, Metric, MetricFamily, MetricType};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many values: threads beyond this share them, round-robin.
const SHARDS: usize = 8;

pub struct PerThread<T> {
    shards: Box<[Padded<T>]>,
}

/// One value to a cache line (and the next), so that neighbours do not share one.
#[repr(align(128))]
struct Padded<T>(T);

impl<T> PerThread<T> {
    pub fn new(mut make: impl FnMut() -> T) -> Self {
        PerThread {
            shards: (0..SHARDS).map(|_| Padded(make())).collect(),
        }
    }

    /// This thread's value.
    pub fn local(&self) -> &T {
        &self.shards[thread_index()].0
    }

    /// Every thread's value.
    pub fn all(&self) -> impl Iterator<Item = &T> {
        self.shards.iter().map(|shard| &shard.0)
    }
}

impl<T: Default> Default for PerThread<T> {
    fn default() -> Self {
        PerThread::new(T::default)
    }
}

/// This thread's shard: threads are numbered as they first ask.
fn thread_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|index| *index)
}

/// A Prometheus counter or histogram vector kept once per thread, exported as one: a scrape
/// adds the threads' series up, label set by label set, so the numbers are exact.
pub struct Merged<V>(pub Arc<PerThread<V>>);

impl<V: Collector> Collector for Merged<V> {
    fn desc(&self) -> Vec<&Desc> {
        self.0.shards[0].0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut merged: Vec<MetricFamily> = Vec::new();
        for shard in self.0.all() {
            for mut family in shard.collect() {
                let Some(into) = merged.iter_mut().find(|m| m.name() == family.name()) else {
                    merged.push(family);
                    continue;
                };
                let kind = family.get_field_type();
                for metric in family.take_metric() {
                    let same = into
                        .mut_metric()
                        .iter_mut()
                        .find(|m| m.get_label() == metric.get_label());
                    match same {
                        Some(same) => add(kind, same, &metric),
                        None => into.mut_metric().push(metric),
                    }
                }
            }
        }
        merged
    }
}

/// Adds `from` into `into`, two series of one metric with the same labels.
fn add(kind: MetricType, into: &mut Metric, from: &Metric) {
    match kind {
        MetricType::COUNTER => {
            let mut counter = Counter::default();
            counter.set_value(into.get_counter().get_value() + from.get_counter().get_value());
            into.set_counter(counter);
        }
        MetricType::HISTOGRAM => {
            let (a, b) = (into.get_histogram(), from.get_histogram());
            let mut sum = Histogram::default();
            sum.set_sample_count(a.get_sample_count() + b.get_sample_count());
            sum.set_sample_sum(a.get_sample_sum() + b.get_sample_sum());
            // The same buckets: every shard is made with the same options.
            let buckets = a
                .get_bucket()
                .iter()
                .zip(b.get_bucket())
                .map(|(x, y)| {
                    let mut bucket = x.clone();
                    bucket.set_cumulative_count(x.cumulative_count() + y.cumulative_count());
                    bucket
                })
                .collect();
            sum.set_bucket(buckets);
            into.set_histogram(sum);
        }
        // Only counters and histograms are kept per thread.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

    #[test]
    fn threads_write_their_own_values_and_a_scrape_adds_them_up() {
        let counts = Arc::new(PerThread::new(|| {
            IntCounterVec::new(Opts::new("t_events_total", "events"), &["kind"]).unwrap()
        }));
        let latency = Arc::new(PerThread::new(|| {
            let opts = HistogramOpts::new("t_seconds", "latency").buckets(vec![0.5, 1.0]);
            HistogramVec::new(opts, &["op"]).unwrap()
        }));
        let registry = Registry::new();
        registry.register(Box::new(Merged(counts.clone()))).unwrap();
        registry
            .register(Box::new(Merged(latency.clone())))
            .unwrap();
        let threads: Vec<_> = (0..12)
            .map(|t| {
                let (counts, latency) = (counts.clone(), latency.clone());
                std::thread::spawn(move || {
                    for i in 0..100 {
                        counts.local().with_label_values(&["a"]).inc();
                        if t % 2 == 0 {
                            counts.local().with_label_values(&["b"]).inc_by(2);
                        }
                        let value = if i % 4 == 0 { 0.25 } else { 0.75 };
                        latency.local().with_label_values(&["load"]).observe(value);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let families = registry.gather();
        let counts = families
            .iter()
            .find(|f| f.name() == "t_events_total")
            .unwrap();
        let by_kind: Vec<(String, f64)> = counts
            .get_metric()
            .iter()
            .map(|m| {
                let kind = m.get_label()[0].value().to_owned();
                (kind, m.get_counter().get_value())
            })
            .collect();
        assert_eq!(
            by_kind,
            [("a".to_owned(), 1200.0), ("b".to_owned(), 1200.0)]
        );
        let latency = families.iter().find(|f| f.name() == "t_seconds").unwrap();
        assert_eq!(latency.get_metric().len(), 1);
        let histogram = latency.get_metric()[0].get_histogram();
        assert_eq!(histogram.get_sample_count(), 1200);
        assert_eq!(histogram.get_sample_sum(), 300.0 * 0.25 + 900.0 * 0.75);
        let cumulative: Vec<u64> = histogram
            .get_bucket()
            .iter()
            .map(|b| b.cumulative_count())
            .collect();
        assert_eq!(cumulative, [300, 1200]);
    }
}
