//! An endpoint's health, computed from its recent attempts: its state
//! (healthy, failing, disabled), success rates, the failures since the last
//! success, and latency percentiles.
//!
//! Pure: the store reads the figures, the API shows the report.

/// What one recent attempt contributes to health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptSample {
    /// Whether it succeeded (a 2xx).
    pub succeeded: bool,
    /// How long it took, ms.
    pub duration_ms: i64,
}

/// What an endpoint's health figures are computed from.
#[derive(Clone, Copy, Debug)]
pub struct HealthInput<'a> {
    /// Whether the endpoint is enabled.
    pub enabled: bool,
    /// The first failure since the last success, if it is failing.
    pub first_failure_at: Option<i64>,
    /// Attempts in the last 24 h.
    pub attempts_24h: i64,
    /// Of which succeeded.
    pub succeeded_24h: i64,
    /// The last (up to) 100 attempts, newest first.
    pub recent: &'a [AttemptSample],
}

/// How an endpoint is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthState {
    /// Enabled, and its last attempts succeeded.
    Healthy,
    /// Enabled, with failures since its last success.
    Failing,
    /// Disabled (by a user or by the disable policy).
    Disabled,
}

impl HealthState {
    /// `healthy`, `failing` or `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Failing => "failing",
            HealthState::Disabled => "disabled",
        }
    }
}

/// Latency percentiles, ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencyFigures {
    /// Median.
    pub p50_ms: i64,
    /// 99th percentile.
    pub p99_ms: i64,
}

/// The health report.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthReport {
    /// The state.
    pub state: HealthState,
    /// Successes / attempts in the last 24 h; `None` without attempts.
    pub success_rate_24h: Option<f64>,
    /// Success rate of the recent attempts; `None` without attempts.
    pub success_rate_recent: Option<f64>,
    /// Failed attempts since the last success (newest first, counted).
    pub consecutive_failures: usize,
    /// The position in `recent` of the newest failure, if any.
    pub last_failure: Option<usize>,
    /// Over the recent attempts; `None` without attempts.
    pub latency: Option<LatencyFigures>,
}

/// Computes the health report.
pub fn assess(input: HealthInput<'_>) -> HealthReport {
    let recent = input.recent;
    let consecutive_failures = recent.iter().take_while(|a| !a.succeeded).count();
    let state = if !input.enabled {
        HealthState::Disabled
    } else if consecutive_failures > 0 || input.first_failure_at.is_some() {
        HealthState::Failing
    } else {
        HealthState::Healthy
    };
    let succeeded_recent = recent.iter().filter(|a| a.succeeded).count() as i64;
    let mut latencies: Vec<i64> = recent.iter().map(|a| a.duration_ms).collect();
    latencies.sort_unstable();
    HealthReport {
        state,
        success_rate_24h: rate(input.succeeded_24h, input.attempts_24h),
        success_rate_recent: rate(succeeded_recent, recent.len() as i64),
        consecutive_failures,
        last_failure: recent.iter().position(|a| !a.succeeded),
        latency: (!latencies.is_empty()).then(|| LatencyFigures {
            p50_ms: percentile(&latencies, 0.50),
            p99_ms: percentile(&latencies, 0.99),
        }),
    }
}

fn rate(ok: i64, all: i64) -> Option<f64> {
    (all > 0).then(|| ok as f64 / all as f64)
}

/// The nearest-rank percentile `p` of sorted, non-empty `values`.
fn percentile(values: &[i64], p: f64) -> i64 {
    values[((values.len() as f64 * p).ceil() as usize).clamp(1, values.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(succeeded: bool, duration_ms: i64) -> AttemptSample {
        AttemptSample {
            succeeded,
            duration_ms,
        }
    }

    fn input(enabled: bool, first: Option<i64>, recent: &[AttemptSample]) -> HealthInput<'_> {
        HealthInput {
            enabled,
            first_failure_at: first,
            attempts_24h: 4,
            succeeded_24h: 3,
            recent,
        }
    }

    #[test]
    fn no_attempts_is_healthy_without_figures() {
        let r = assess(HealthInput {
            attempts_24h: 0,
            succeeded_24h: 0,
            ..input(true, None, &[])
        });
        assert_eq!(r.state, HealthState::Healthy);
        assert_eq!(r.success_rate_24h, None);
        assert_eq!(r.success_rate_recent, None);
        assert_eq!(r.latency, None);
        assert_eq!(r.last_failure, None);
    }

    #[test]
    fn failures_since_the_last_success_are_counted_newest_first() {
        let recent = [
            sample(false, 30),
            sample(false, 10),
            sample(true, 20),
            sample(false, 40),
        ];
        let r = assess(input(true, Some(5), &recent));
        assert_eq!(r.state, HealthState::Failing);
        assert_eq!(r.consecutive_failures, 2);
        assert_eq!(r.last_failure, Some(0));
        assert_eq!(r.success_rate_24h, Some(0.75));
        assert_eq!(r.success_rate_recent, Some(0.25));
        assert_eq!(
            r.latency,
            Some(LatencyFigures {
                p50_ms: 20,
                p99_ms: 40
            })
        );
    }

    #[test]
    fn a_running_streak_or_a_disable_shows_in_the_state() {
        let ok = [sample(true, 1)];
        assert_eq!(
            assess(input(true, Some(1), &ok)).state,
            HealthState::Failing
        );
        assert_eq!(assess(input(false, None, &ok)).state, HealthState::Disabled);
        assert_eq!(assess(input(true, None, &ok)).state, HealthState::Healthy);
        assert_eq!(HealthState::Failing.as_str(), "failing");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.50), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&[7], 0.99), 7);
    }
}
