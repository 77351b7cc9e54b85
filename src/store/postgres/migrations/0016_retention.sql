-- Retention: indexes that let the pruner find the oldest rows of each kind
-- without scanning whole tables (see store::retention). Events are picked by
-- age and checked against their deliveries (deliveries_by_event); attempts,
-- ended conversations and audit entries by age.

CREATE INDEX events_by_age ON events (created_at);
CREATE INDEX attempts_by_age ON attempts (started_at);
CREATE INDEX conversations_by_age ON conversations (updated_at);
