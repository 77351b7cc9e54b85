-- Custom header values of endpoints are secrets unless marked plain: the
-- API shows a secret only when it is created, `••••` and its last four
-- characters after that, and the attempt log redacts it. This column lists
-- (as a JSON array) the names in `headers` whose values are plain. Every
-- header of an existing endpoint becomes a secret.

ALTER TABLE endpoints ADD COLUMN plain_headers TEXT NOT NULL DEFAULT '[]';
