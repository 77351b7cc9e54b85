-- Retention: indexes that let the pruner find the oldest rows of each kind
-- without scanning whole tables (see store::retention). Events and
-- conversations are walked by (age, id) with a cursor, each checked against
-- its rule (an event's deliveries through deliveries_by_event); attempts and
-- audit entries (audit_at) are taken oldest first.

CREATE INDEX events_by_age ON events (created_at, id);
CREATE INDEX attempts_by_age ON attempts (started_at);
CREATE INDEX conversations_by_age ON conversations (updated_at, id);
