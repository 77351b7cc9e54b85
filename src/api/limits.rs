//! Limits on what the public can send. A publishable key sits in a web
//! page's source, so anyone can use it: each (key, client address) may send
//! a bounded number of chat messages a minute, and a 429 with `Retry-After`
//! answers the rest. Secret keys are not limited here.
//!
//! Counting is per process and per fixed one-minute window; with N nodes
//! behind a balancer a visitor may send up to N times the limit, unless the
//! balancer sends each client address to one node (docs/SCALING.md: kept
//! per node on purpose, with what sharing it would cost).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Messages a minute one visitor address may send through one publishable key.
pub const VISITOR_MESSAGES_PER_MINUTE: u32 = 30;

const WINDOW: Duration = Duration::from_secs(60);
/// Past this many tracked pairs, expired windows are swept out.
const SWEEP_AT: usize = 50_000;

/// A key id and the client address that used it.
type Visitor = (String, Option<IpAddr>);

/// Fixed-window counters per (key id, client address): the window's start
/// and the messages counted in it.
#[derive(Debug)]
pub struct VisitorLimit {
    per_window: u32,
    windows: Mutex<HashMap<Visitor, (Instant, u32)>>,
}

impl Default for VisitorLimit {
    fn default() -> Self {
        Self::new(VISITOR_MESSAGES_PER_MINUTE)
    }
}

impl VisitorLimit {
    /// A limit of `per_minute` messages (at least 1).
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_window: per_minute.max(1),
            windows: Mutex::default(),
        }
    }

    /// Counts one message for `key_id` from `client`; `Err(seconds)` when
    /// the window is full, with the seconds until it resets.
    pub fn check(&self, key_id: &str, client: Option<IpAddr>, now: Instant) -> Result<(), u64> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= SWEEP_AT {
            windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let entry = windows
            .entry((key_id.to_owned(), client))
            .or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        if entry.1 >= self.per_window {
            let left = WINDOW.saturating_sub(now.duration_since(entry.0));
            return Err(left.as_secs().max(1));
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key_and_address_and_resets_each_minute() {
        let limit = VisitorLimit::new(3);
        let t0 = Instant::now();
        let a: Option<IpAddr> = Some("203.0.113.7".parse().unwrap());
        let b: Option<IpAddr> = Some("203.0.113.8".parse().unwrap());
        for _ in 0..3 {
            assert!(limit.check("key_1", a, t0).is_ok());
        }
        let wait = limit
            .check("key_1", a, t0 + Duration::from_secs(15))
            .unwrap_err();
        assert_eq!(wait, 45);
        assert!(limit.check("key_1", b, t0).is_ok(), "another address");
        assert!(limit.check("key_2", a, t0).is_ok(), "another key");
        assert!(limit.check("key_1", a, t0 + WINDOW).is_ok(), "a new minute");
    }
}
