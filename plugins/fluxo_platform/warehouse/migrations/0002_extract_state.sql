-- Extraction progress, kept durably and updated in the same transaction that records a landed batch.
CREATE SCHEMA IF NOT EXISTS extract;

-- One row per (source, stream): the watermark/offsets/cursor the next run starts from.
CREATE TABLE extract.watermark (
    source      text NOT NULL,
    stream      text NOT NULL,
    value       jsonb NOT NULL,
    batch_id    text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, stream)
);

-- Every landed batch: where it is and what it counted.
CREATE TABLE extract.batch (
    batch_id     text PRIMARY KEY,
    source       text NOT NULL,
    stream       text NOT NULL,
    ingest_date  date NOT NULL,
    raw_path     text NOT NULL,
    counts       jsonb NOT NULL DEFAULT '{}'::jsonb,
    landed_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX batch_source_date ON extract.batch (source, ingest_date);

-- S3 objects already landed: the same key+ETag lands once; a changed object (new ETag) lands again.
CREATE TABLE extract.s3_object (
    bucket      text NOT NULL,
    key         text NOT NULL,
    etag        text NOT NULL,
    size        bigint,
    batch_id    text NOT NULL,
    landed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bucket, key, etag)
);
