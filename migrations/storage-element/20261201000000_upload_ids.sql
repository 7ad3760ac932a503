-- The ingester's identity for an upload (`X-Artstore-Upload-Id`), one row per id:
-- a repeated id is answered with the file it already produced, and an id the ingester gave up
-- on (`DELETE /api/v1/uploads/{id}`) is remembered as abandoned, so a commit arriving later is
-- refused. A table of its own rather than a column of `files`: those rows are a cache that
-- rebuilds delete and recreate from the sidecars, and the id must survive them.
-- Rows are pruned after a bounded time (see docs/faults.md).
CREATE TABLE uploads (
    upload_id   uuid PRIMARY KEY,
    -- The file this upload committed; NULL when it was abandoned before any commit.
    file_id     uuid,
    abandoned   boolean     NOT NULL DEFAULT false,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX uploads_file_id ON uploads (file_id) WHERE file_id IS NOT NULL;
CREATE INDEX uploads_recorded_at ON uploads (recorded_at);
