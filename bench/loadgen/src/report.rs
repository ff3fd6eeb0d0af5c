//! Shared pieces of every report: latency histograms, server figures, error tallies.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::procfs::{Sample, cpu_secs, sys_secs};

/// A latency histogram in microseconds, 1 µs to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant, valid histogram bounds")
}

/// `{count, p50, p90, p99, p999, max, mean}` in µs.
pub fn latency_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({ "count": 0, "p50": null, "p90": null, "p99": null, "p999": null, "max": null, "mean": null });
    }
    json!({
        "count": h.len(),
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
        "mean": (h.mean() * 10.0).round() / 10.0,
    })
}

/// `p50 12 µs, p90 …` for humans.
pub fn latency_line(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".to_string();
    }
    format!(
        "p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs ({} samples)",
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.90),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
        h.len()
    )
}

/// Server CPU seconds in a window, when both samples exist.
pub fn server_cpu(before: Option<Sample>, after: Option<Sample>) -> Option<f64> {
    Some(cpu_secs(&before?, &after?))
}

/// Server CPU seconds spent in the kernel in a window, when both samples exist.
pub fn server_sys(before: Option<Sample>, after: Option<Sample>) -> Option<f64> {
    Some(sys_secs(&before?, &after?))
}

/// CPU µs per unit of work.
pub fn per_unit_us(cpu: Option<f64>, units: u64) -> Option<f64> {
    let cpu = cpu?;
    (units > 0).then(|| round2(cpu * 1e6 / units as f64))
}

/// Rounds to 2 decimals (for readable JSON).
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Formats an optional figure.
pub fn opt(x: Option<f64>, unit: &str) -> String {
    match x {
        Some(v) => format!("{v:.2}{unit}"),
        None => "n/a".to_string(),
    }
}

/// Distinct error messages with their counts (the first 20 kinds are kept).
#[derive(Debug, Default)]
pub struct Errors {
    kinds: BTreeMap<String, u64>,
    /// Every error counted.
    pub total: u64,
}

impl Errors {
    /// Counts one error.
    pub fn add(&mut self, message: String) {
        self.total += 1;
        if let Some(n) = self.kinds.get_mut(&message) {
            *n += 1;
        } else if self.kinds.len() < 20 {
            self.kinds.insert(message, 1);
        }
    }

    /// Adds another tally.
    pub fn merge(&mut self, other: Errors) {
        self.total += other.total;
        for (k, n) in other.kinds {
            if let Some(m) = self.kinds.get_mut(&k) {
                *m += n;
            } else if self.kinds.len() < 20 {
                self.kinds.insert(k, n);
            }
        }
    }

    /// `{message: count}`.
    pub fn json(&self) -> Value {
        json!(self.kinds)
    }

    /// Prints the kinds, most frequent first.
    pub fn print(&self, what: &str) {
        if self.total == 0 {
            return;
        }
        println!("  {what}: {} in all", self.total);
        let mut kinds: Vec<_> = self.kinds.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1));
        for (k, n) in kinds.into_iter().take(5) {
            println!("    {n} × {k}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summary() -> anyhow::Result<()> {
        let mut h = histogram();
        for v in 1..=1000u64 {
            h.record(v)?;
        }
        let j = latency_json(&h);
        assert_eq!(j["count"], 1000);
        assert_eq!(j["p50"], 500);
        assert_eq!(j["max"], 1000);
        assert_eq!(latency_json(&histogram())["p99"], Value::Null);
        Ok(())
    }

    #[test]
    fn error_tally() {
        let mut e = Errors::default();
        e.add("a".into());
        e.add("a".into());
        let mut f = Errors::default();
        f.add("b".into());
        e.merge(f);
        assert_eq!(e.total, 3);
        assert_eq!(e.json(), json!({"a": 2, "b": 1}));
    }
}

/// The generator's own CPU over a window: when it nears 100% of its threads,
/// the figures measure the generator rather than the server.
#[derive(Debug)]
pub struct SelfCpu {
    start: Option<Sample>,
    wall: std::time::Instant,
}

impl SelfCpu {
    /// Starts the window now.
    pub fn start() -> SelfCpu {
        SelfCpu { start: crate::procfs::sample(std::process::id()).ok(), wall: std::time::Instant::now() }
    }

    /// `(cpu seconds, busy fraction of threads)`, and a warning when busy.
    pub fn finish(&self, threads: usize) -> (Option<f64>, Option<f64>) {
        let end = crate::procfs::sample(std::process::id()).ok();
        let Some(cpu) = server_cpu(self.start, end) else { return (None, None) };
        let wall = self.wall.elapsed().as_secs_f64();
        let busy = cpu / (wall * threads.max(1) as f64).max(1e-9);
        if busy > 0.9 {
            println!(
                "  warning: the load generator was CPU-bound ({:.0}% of {} thread(s)): these figures may measure \
                 it rather than the server; give it more cores (--threads) or lighten the load",
                busy * 100.0,
                threads.max(1)
            );
        }
        (Some(round2(cpu)), Some(round2(busy)))
    }
}
