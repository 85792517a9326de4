//! Statistics of a replica's lag history.

use std::time::{Duration, Instant};

use serde::Serialize;

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LagSample {
    pub at: Instant,
    pub lag: Duration,
    pub bytes: u64,
}

/// Lag statistics over the configured window. Times in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct LagStats {
    /// Samples in the window.
    pub samples: usize,
    /// Smallest lag.
    pub min: f64,
    /// Largest lag.
    pub max: f64,
    /// Mean lag.
    pub mean: f64,
    /// Median lag.
    pub median: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Lag change per minute (least-squares slope): positive while the replica falls behind.
    pub trend_per_minute: f64,
    /// Largest lag in bytes.
    pub max_bytes: u64,
}

impl LagStats {
    /// `None` without samples. Percentiles from an HDR histogram at microsecond resolution
    /// (3 significant digits).
    pub(crate) fn from_samples(samples: impl Iterator<Item = LagSample> + Clone) -> Option<LagStats> {
        let first = samples.clone().next()?;
        let mut hist = hdrhistogram::Histogram::<u64>::new(3).ok()?;
        let (mut n, mut sum, mut max_bytes) = (0usize, 0.0, 0u64);
        // Least squares of lag (s) over time (min) since the first sample.
        let (mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0);
        for s in samples {
            let y = s.lag.as_secs_f64();
            let x = s.at.saturating_duration_since(first.at).as_secs_f64() / 60.0;
            hist.record(s.lag.as_micros().min(u128::from(u64::MAX)) as u64).ok()?;
            n += 1;
            sum += y;
            max_bytes = max_bytes.max(s.bytes);
            sx += x;
            sy += y;
            sxx += x * x;
            sxy += x * y;
        }
        let nf = n as f64;
        let denom = nf * sxx - sx * sx;
        let trend = if n > 1 && denom > f64::EPSILON {
            (nf * sxy - sx * sy) / denom
        } else {
            0.0
        };
        let q = |p: f64| hist.value_at_quantile(p) as f64 / 1e6;
        Some(LagStats {
            samples: n,
            min: hist.min() as f64 / 1e6,
            max: hist.max() as f64 / 1e6,
            mean: sum / nf,
            median: q(0.5),
            p95: q(0.95),
            p99: q(0.99),
            trend_per_minute: trend,
            max_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_of_a_known_sample() {
        let t0 = Instant::now();
        // 1..=100 seconds of lag, one sample per second: lag grows 60 s per minute.
        let samples: Vec<LagSample> = (1..=100u64)
            .map(|i| LagSample {
                at: t0 + Duration::from_secs(i),
                lag: Duration::from_secs(i),
                bytes: i * 10,
            })
            .collect();
        let st = LagStats::from_samples(samples.iter().copied()).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= b * 0.001 + 1e-9;
        assert_eq!(st.samples, 100);
        assert!(close(st.min, 1.0) && close(st.max, 100.0), "{st:?}");
        assert!(close(st.mean, 50.5), "{st:?}");
        assert!(close(st.median, 50.0), "{st:?}");
        assert!(close(st.p95, 95.0) && close(st.p99, 99.0), "{st:?}");
        assert!(close(st.trend_per_minute, 60.0), "{st:?}");
        assert_eq!(st.max_bytes, 1000);
        // A flat history has no trend; no samples, no statistics.
        let flat = (0..10u64).map(|i| LagSample {
            at: t0 + Duration::from_secs(i),
            lag: Duration::from_millis(5),
            bytes: 0,
        });
        assert_eq!(LagStats::from_samples(flat).unwrap().trend_per_minute, 0.0);
        assert!(LagStats::from_samples(std::iter::empty()).is_none());
    }
}
