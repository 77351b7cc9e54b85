//! A per-endpoint rate limit: a token bucket holding one token, refilled
//! at the endpoint's rate, so requests start at most `rate` times a second
//! and evenly spaced (no burst after a quiet spell).

use std::time::Duration;
use tokio::time::Instant;

/// One endpoint's bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    interval: Duration,
    next_free: Instant,
}

impl TokenBucket {
    /// A bucket for `per_second` requests a second (at least 1).
    pub fn new(per_second: i64, now: Instant) -> Self {
        let per_second = per_second.clamp(1, 1_000_000) as u64;
        Self {
            interval: Duration::from_nanos(1_000_000_000 / per_second),
            next_free: now,
        }
    }

    /// Takes the token if it is there; otherwise answers when it will be.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Instant> {
        if now >= self.next_free {
            self.next_free = now + self.interval;
            Ok(())
        } else {
            Err(self.next_free)
        }
    }

    /// Whether a token is waiting (the bucket can be forgotten without
    /// letting a burst through).
    pub fn is_full(&self, now: Instant) -> bool {
        now >= self.next_free
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_requests_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, t0);
        assert!(b.try_take(t0).is_ok());
        let next = b.try_take(t0).unwrap_err();
        assert_eq!(next - t0, Duration::from_millis(100));
        assert!(!b.is_full(t0 + Duration::from_millis(99)));
        assert!(b.try_take(t0 + Duration::from_millis(100)).is_ok());
        // At most rate starts in any second.
        let mut b = TokenBucket::new(5, t0);
        let started = (0..1000)
            .map(|ms| t0 + Duration::from_millis(ms))
            .filter(|t| b.try_take(*t).is_ok())
            .count();
        assert_eq!(started, 5);
    }
}
