-- Indexes no statement reads, each one more B-tree insert on every upload (the outbox's also on
-- the relay's update, which cannot be HOT): nothing on the element looks a file up by its content
-- hash (a search by hash is the query node's), and event ids and a file's upload id are fresh
-- ids that no statement looks up or conflicts on. docs/performance.md has what they cost.
DROP INDEX IF EXISTS files_sha256;
ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_event_id_key;
DROP INDEX IF EXISTS uploads_file_id;
