-- Which botwire node made each attempt: the delivery engine's node id
-- (`node_…`, the `locked_by` of its leases), or `api` for a send the API
-- made itself (a manual retry, a test ping). NULL for attempts recorded
-- before this column existed.

ALTER TABLE attempts ADD COLUMN node TEXT;
