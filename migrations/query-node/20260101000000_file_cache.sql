-- The query node's search cache: one row per file, mirroring the storage elements' records.
-- Rows are never removed by events: a delete is a tombstone (deleted = true) that keeps its
-- version, so a stale create or update arriving late cannot bring the file back.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Everything searchable, as one tsvector. 'simple' (no stemming, no stop words) because the
-- archive holds names and tags in many languages. Filenames are indexed twice: as written
-- (so "report-2026.pdf" matches itself) and with punctuation turned into spaces (so "report"
-- and "2026" match). Declared IMMUTABLE so it can feed a generated column; array_to_string
-- over text[] does not depend on any setting.
CREATE FUNCTION file_search_vector(filename text, description text, tags text[], owner text)
RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT setweight(to_tsvector('simple'::regconfig, coalesce(filename, '')), 'A')
        || setweight(to_tsvector('simple'::regconfig,
               regexp_replace(coalesce(filename, ''), '[^[:alnum:]]+', ' ', 'g')), 'A')
        || setweight(to_tsvector('simple'::regconfig, array_to_string(coalesce(tags, '{}'), ' ')), 'B')
        || setweight(to_tsvector('simple'::regconfig, coalesce(owner, '')), 'C')
        || setweight(to_tsvector('simple'::regconfig, coalesce(description, '')), 'D')
$$;

CREATE TABLE file_cache (
    file_id              uuid PRIMARY KEY,
    version              bigint NOT NULL CHECK (version >= 1),
    deleted              boolean NOT NULL DEFAULT false,
    original_filename    text NOT NULL,
    storage_key          text NOT NULL,
    size                 bigint NOT NULL CHECK (size >= 0),
    -- Deliberately NOT unique: two files may have the same content.
    sha256               text NOT NULL,
    mime_type            text NOT NULL,
    description          text,
    tags                 text[] NOT NULL DEFAULT '{}',
    storage_element_id   text NOT NULL,
    created_at           timestamptz NOT NULL,
    created_by           text NOT NULL,
    updated_at           timestamptz NOT NULL,
    retention            text NOT NULL,
    retention_expires_at timestamptz,
    -- The event (or backfill) that wrote this version, and when this node wrote it.
    source_event_id      uuid,
    synced_at            timestamptz NOT NULL DEFAULT now(),
    search_vector        tsvector GENERATED ALWAYS AS
        (file_search_vector(original_filename, description, tags, created_by)) STORED
);

-- fastupdate off: with a pending list every search scans it linearly until vacuum merges it,
-- which makes search latency depend on how recently autovacuum ran. Writes pay instead.
CREATE INDEX file_cache_search_idx ON file_cache USING gin (search_vector)
    WITH (fastupdate = off) WHERE NOT deleted;
CREATE INDEX file_cache_filename_trgm_idx ON file_cache USING gin (original_filename gin_trgm_ops)
    WITH (fastupdate = off) WHERE NOT deleted;
CREATE INDEX file_cache_tags_idx ON file_cache USING gin (tags)
    WITH (fastupdate = off) WHERE NOT deleted;
CREATE INDEX file_cache_sha256_idx ON file_cache (sha256);
-- Keyset orders: every sort key is paired with file_id so pages never overlap or skip.
CREATE INDEX file_cache_created_idx ON file_cache (created_at, file_id) WHERE NOT deleted;
CREATE INDEX file_cache_size_idx ON file_cache (size, file_id) WHERE NOT deleted;
CREATE INDEX file_cache_name_idx ON file_cache (original_filename COLLATE "C", file_id) WHERE NOT deleted;
CREATE INDEX file_cache_element_idx ON file_cache (storage_element_id, synced_at);
CREATE INDEX file_cache_owner_idx ON file_cache (created_by) WHERE NOT deleted;
CREATE INDEX file_cache_mime_idx ON file_cache (mime_type text_pattern_ops) WHERE NOT deleted;
