-- faceanon results database: tables.
--
-- Executed by faceanon.store.ResultsDB every time a database is opened for writing, so
-- every statement here must be idempotent (IF NOT EXISTS, INSERT OR IGNORE).
-- Table names are a contract with the report and the benchmark suite; columns may be added.
--
-- Timestamps are TIMESTAMP in UTC. JSON columns hold objects written by the library.
-- There are no FOREIGN KEY constraints on purpose: DuckDB checks them row by row on
-- insert (too slow for millions of scores) and refuses to delete a parent row in the
-- same transaction as its children. ResultsDB.delete_run removes children explicitly.

CREATE SEQUENCE IF NOT EXISTS runs_id_seq START 1;
CREATE SEQUENCE IF NOT EXISTS cases_id_seq START 1;

-- One benchmark invocation.
CREATE TABLE IF NOT EXISTS runs (
    id                  BIGINT PRIMARY KEY DEFAULT nextval('runs_id_seq'),
    name                VARCHAR,
    started             TIMESTAMP NOT NULL,          -- UTC
    finished            TIMESTAMP,                   -- UTC, NULL while running
    status              VARCHAR NOT NULL
        CHECK (status IN ('running', 'complete', 'failed', 'interrupted')),
    git_commit          VARCHAR,
    git_dirty           BOOLEAN,
    packages            JSON,                        -- {"numpy": "2.4.6", ...}
    machine             JSON,                        -- {"cpu": ..., "gpu": ..., ...}
    dataset_name        VARCHAR NOT NULL,
    dataset_fingerprint VARCHAR NOT NULL,
    config              JSON
);

-- One (method, k, mode, detector, backend) cell of a run.
CREATE TABLE IF NOT EXISTS cases (
    id       BIGINT PRIMARY KEY DEFAULT nextval('cases_id_seq'),
    run_id   BIGINT NOT NULL,
    method   VARCHAR NOT NULL,
    k        BIGINT,                                 -- NULL for methods without a strength
    mode     VARCHAR NOT NULL CHECK (mode IN ('clear', 'naive', 'reverse', 'parrot')),
    detector VARCHAR NOT NULL,
    backend  VARCHAR NOT NULL,
    options  JSON
);

-- Per original or anonymized image of a run.
CREATE TABLE IF NOT EXISTS images (
    run_id      BIGINT NOT NULL,
    key         VARCHAR NOT NULL,                    -- dataset image key
    role        VARCHAR NOT NULL CHECK (role IN ('original', 'anonymized')),
    method      VARCHAR,                             -- NULL for originals
    k           BIGINT,
    sha256      VARCHAR,
    acquired    BOOLEAN,                             -- an embedding could be computed
    faces_found INTEGER,
    backend     VARCHAR
);

-- One comparison (probe vs gallery image) of a case. Distance lower = more similar;
-- NULL when either side has no embedding (failure to acquire / to enrol).
-- probe_acquired / gallery_enrolled tell FTA and FTE apart; when NULL the metric views
-- fall back to "some comparison of that image has a distance".
CREATE TABLE IF NOT EXISTS scores (
    case_id          BIGINT NOT NULL,
    probe            VARCHAR NOT NULL,
    gallery          VARCHAR NOT NULL,
    mated            BOOLEAN NOT NULL,
    distance         DOUBLE,
    probe_acquired   BOOLEAN,
    gallery_enrolled BOOLEAN
);

-- Embedding cache, shared by all runs (never deleted with a run).
-- embedding is NULL when no face was found ("no face" is cached too).
CREATE TABLE IF NOT EXISTS embeddings (
    backend     VARCHAR NOT NULL,
    sha256      VARCHAR NOT NULL,
    embedding   DOUBLE[],
    faces_found INTEGER NOT NULL,
    created     TIMESTAMP,                           -- UTC
    PRIMARY KEY (backend, sha256)
);

-- Benchmark timings per case (pytest-benchmark style statistics).
CREATE TABLE IF NOT EXISTS timings (
    case_id BIGINT NOT NULL,
    name    VARCHAR NOT NULL,                        -- 'anonymize', 'recognize', ...
    min     DOUBLE,
    max     DOUBLE,
    median  DOUBLE,
    mean    DOUBLE,
    stddev  DOUBLE,
    rounds  BIGINT,
    unit    VARCHAR NOT NULL DEFAULT 'seconds per image'
);

-- Extra thresholds the `confusion` view reports (besides the decision threshold).
-- Seeded once, when the database is new: 0.6 (face_recognition's tolerance) and 0.575
-- (the seed study's DeepPrivacy table).
CREATE TABLE IF NOT EXISTS confusion_thresholds (
    threshold DOUBLE PRIMARY KEY
);
INSERT OR IGNORE INTO confusion_thresholds
    SELECT * FROM (VALUES (0.6), (0.575)) AS t(threshold)
    WHERE NOT EXISTS (SELECT 1 FROM information_schema.tables
                      WHERE table_name = 'settings' AND table_schema = current_schema());

-- One-row settings: the decision threshold of the metric views (default 0.6).
CREATE TABLE IF NOT EXISTS settings (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    threshold DOUBLE NOT NULL
);
INSERT OR IGNORE INTO settings VALUES (1, 0.6);
