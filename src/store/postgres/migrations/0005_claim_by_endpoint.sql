-- Claims take due deliveries endpoint by endpoint, each endpoint at most as
-- many as its lane in the claiming worker has room for, so a large backlog
-- for one endpoint can neither fill every claim nor be read through to find
-- another endpoint's due deliveries. The due index leads with the endpoint.

DROP INDEX deliveries_due;
CREATE INDEX deliveries_due_by_endpoint ON deliveries (endpoint_id, next_attempt_at)
    WHERE status IN ('pending', 'failed');
