-- The storage element's metadata cache. The sidecars (`<key>.attr.json`) are the truth; these rows
-- mirror them and expire after the element's cache TTL.
CREATE TABLE files (
    file_id              uuid PRIMARY KEY,
    storage_key          text        NOT NULL,
    size                 bigint      NOT NULL CHECK (size >= 0),
    -- Not unique: the same content may be stored more than once.
    sha256               text        NOT NULL,
    created_by           text        NOT NULL,
    retention_expires_at timestamptz,
    version              bigint      NOT NULL CHECK (version >= 1),
    -- The whole record as the sidecar holds it.
    record               jsonb       NOT NULL,
    cache_updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX files_sha256 ON files (sha256);
CREATE INDEX files_retention_expires_at ON files (retention_expires_at)
    WHERE retention_expires_at IS NOT NULL;
CREATE INDEX files_cache_updated_at ON files (cache_updated_at);

-- Events waiting for the relay, written in the same transaction as the cache change.
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    event_type  text        NOT NULL,
    event_id    uuid        NOT NULL UNIQUE,
    file_id     uuid        NOT NULL,
    version     bigint      NOT NULL,
    occurred_at timestamptz NOT NULL,
    payload     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    attempts    integer     NOT NULL DEFAULT 0,
    sent_at     timestamptz,
    stream_id   text
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

-- One row per maintenance run (rebuilds, consistency checks, sweeps): start, end and report.
CREATE TABLE maintenance_runs (
    id          bigserial PRIMARY KEY,
    kind        text        NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    report      jsonb
);
