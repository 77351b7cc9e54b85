-- The audit log: one row per change made through the API or the command
-- line. `actor_key_id` is the acting API key (NULL for the command line),
-- `actor_name` its name at the time (or `cli`); `changes` is a JSON summary
-- with every secret value removed. Rows older than `retention.audit` are
-- pruned by `serve`.

CREATE TABLE audit (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    actor_key_id TEXT,
    actor_name TEXT NOT NULL,
    request_id TEXT,
    action TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT,
    changes TEXT NOT NULL DEFAULT '{}'
);

CREATE INDEX audit_account_id ON audit (account_id, id);
CREATE INDEX audit_at ON audit (at);

-- The W3C trace id of the request that caused an event, so every attempt
-- of its deliveries (retries too) sends a `traceparent` in that trace.
ALTER TABLE events ADD COLUMN trace_id TEXT;
