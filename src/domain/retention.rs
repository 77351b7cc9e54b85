//! Retention: how long each kind of record is kept, and which rows a prune
//! may remove.
//!
//! The rules, whatever the backend:
//!
//! * an event goes once it is older than the event retention and every
//!   delivery it made has finished (succeeded or dead) and last changed
//!   before the same cut-off; its deliveries and their attempts go with it;
//! * a pending or retrying delivery, and so its event, is never removed;
//! * an attempt goes once it is older than the attempt retention (and at
//!   the latest with its delivery);
//! * a conversation goes once it has ended (neither active nor in handoff)
//!   and was last updated before the conversation retention; its messages,
//!   timers and story-webhook calls go with it; an active conversation is
//!   never removed;
//! * audit entries go once older than the audit retention.
//!
//! A retention of zero keeps that kind forever.

use std::time::Duration;

/// Delivery statuses of deliveries still to be sent: never pruned.
pub const UNFINISHED_DELIVERY: [&str; 2] = ["pending", "failed"];

/// Conversation statuses of conversations still going: never pruned.
pub const OPEN_CONVERSATION: [&str; 2] = ["active", "handoff"];

/// What a prune removes, one counter each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PruneKind {
    /// Published events.
    Events,
    /// Deliveries of pruned events.
    Deliveries,
    /// Delivery attempts.
    Attempts,
    /// Ended conversations.
    Conversations,
    /// Transcript lines of pruned conversations.
    Messages,
    /// Timers left on pruned conversations.
    Timers,
    /// Story-webhook call records of pruned conversations.
    WebhookCalls,
    /// Audit log entries.
    Audit,
}

impl PruneKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [PruneKind; 8] = [
        PruneKind::Events,
        PruneKind::Deliveries,
        PruneKind::Attempts,
        PruneKind::Conversations,
        PruneKind::Messages,
        PruneKind::Timers,
        PruneKind::WebhookCalls,
        PruneKind::Audit,
    ];

    /// The metric label and machine name.
    pub fn as_str(self) -> &'static str {
        match self {
            PruneKind::Events => "events",
            PruneKind::Deliveries => "deliveries",
            PruneKind::Attempts => "attempts",
            PruneKind::Conversations => "conversations",
            PruneKind::Messages => "messages",
            PruneKind::Timers => "timers",
            PruneKind::WebhookCalls => "webhook_calls",
            PruneKind::Audit => "audit",
        }
    }

    /// The kind in plain words, plural.
    pub fn words(self) -> &'static str {
        match self {
            PruneKind::Events => "events",
            PruneKind::Deliveries => "deliveries",
            PruneKind::Attempts => "delivery attempts",
            PruneKind::Conversations => "conversations",
            PruneKind::Messages => "conversation messages",
            PruneKind::Timers => "conversation timers",
            PruneKind::WebhookCalls => "story webhook calls",
            PruneKind::Audit => "audit log entries",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// How long each kind is kept; `None` keeps it forever.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Events, with their finished deliveries.
    pub events: Option<Duration>,
    /// Delivery attempts.
    pub attempts: Option<Duration>,
    /// Ended conversations, with their transcripts.
    pub conversations: Option<Duration>,
    /// Audit log entries.
    pub audit: Option<Duration>,
}

/// A span of zero means "keep forever".
pub fn kept_for(span: Duration) -> Option<Duration> {
    (!span.is_zero()).then_some(span)
}

impl RetentionPolicy {
    /// The cut-offs at `now_ms`: rows at or after a cut-off are kept.
    pub fn cutoffs(&self, now_ms: i64) -> Cutoffs {
        let cut = |keep: Option<Duration>| {
            keep.map(|d| now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
        };
        Cutoffs {
            events: cut(self.events),
            attempts: cut(self.attempts),
            conversations: cut(self.conversations),
            audit: cut(self.audit),
        }
    }
}

/// Unix-ms cut-offs of one prune; `None` prunes nothing of that kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cutoffs {
    /// Events created before this go (when their deliveries are done).
    pub events: Option<i64>,
    /// Attempts started before this go.
    pub attempts: Option<i64>,
    /// Ended conversations last updated before this go.
    pub conversations: Option<i64>,
    /// Audit entries made before this go.
    pub audit: Option<i64>,
}

/// A delivery in `status`, last changed at `updated_at`, lets its event go
/// at `cut`.
pub fn delivery_lets_event_go(status: &str, updated_at: i64, cut: i64) -> bool {
    !UNFINISHED_DELIVERY.contains(&status) && updated_at < cut
}

/// A conversation in `status`, last updated at `updated_at`, may go at
/// `cut`.
pub fn conversation_may_go(status: &str, updated_at: i64, cut: i64) -> bool {
    !OPEN_CONVERSATION.contains(&status) && updated_at < cut
}

/// Rows removed (or, in a dry run, that would be), per kind, and the
/// PostgreSQL partitions dropped whole (their rows are counted by kind
/// too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneCounts {
    rows: [u64; 8],
    partitions: u64,
}

impl PruneCounts {
    /// Adds `n` rows of `kind`.
    pub fn add(&mut self, kind: PruneKind, n: u64) {
        self.rows[kind.index()] += n;
    }
    /// Rows of `kind`.
    pub fn get(&self, kind: PruneKind) -> u64 {
        self.rows[kind.index()]
    }
    /// Adds `n` partitions dropped.
    pub fn add_partitions(&mut self, n: u64) {
        self.partitions += n;
    }
    /// Partitions dropped.
    pub fn partitions(&self) -> u64 {
        self.partitions
    }
    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &PruneCounts) {
        for k in PruneKind::ALL {
            self.add(k, other.get(k));
        }
        self.partitions += other.partitions;
    }
    /// Rows of every kind together.
    pub fn total(&self) -> u64 {
        self.rows.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_keeps_forever_and_spans_become_cutoffs() {
        let p = RetentionPolicy {
            events: kept_for(Duration::from_secs(60)),
            attempts: kept_for(Duration::ZERO),
            conversations: kept_for(Duration::from_secs(3600)),
            audit: None,
        };
        let c = p.cutoffs(1_000_000);
        assert_eq!(c.events, Some(940_000));
        assert_eq!(c.attempts, None);
        assert_eq!(c.conversations, Some(1_000_000 - 3_600_000));
        assert_eq!(c.audit, None);
        let huge = RetentionPolicy {
            events: Some(Duration::from_secs(u64::MAX)),
            ..Default::default()
        };
        assert_eq!(huge.cutoffs(5).events, Some(5 - i64::MAX));
    }

    #[test]
    fn unfinished_deliveries_hold_their_event_whatever_their_age() {
        for status in UNFINISHED_DELIVERY {
            assert!(!delivery_lets_event_go(status, 0, 1_000));
        }
        assert!(delivery_lets_event_go("succeeded", 999, 1_000));
        assert!(delivery_lets_event_go("dead", 0, 1_000));
        assert!(!delivery_lets_event_go("succeeded", 1_000, 1_000));
    }

    #[test]
    fn open_conversations_stay_whatever_their_age() {
        for status in OPEN_CONVERSATION {
            assert!(!conversation_may_go(status, 0, 1_000));
        }
        assert!(conversation_may_go("completed", 999, 1_000));
        assert!(!conversation_may_go("completed", 1_000, 1_000));
    }

    #[test]
    fn counts_add_up_per_kind() {
        let mut a = PruneCounts::default();
        a.add(PruneKind::Events, 3);
        a.add(PruneKind::Audit, 1);
        let mut b = PruneCounts::default();
        b.add(PruneKind::Events, 2);
        b.add_partitions(2);
        a.merge(&b);
        assert_eq!(a.get(PruneKind::Events), 5);
        assert_eq!(a.get(PruneKind::Messages), 0);
        assert_eq!(a.total(), 6);
        assert_eq!(a.partitions(), 2);
    }
}
