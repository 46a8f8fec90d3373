-- faceanon results database: tables, schema version 5 (the video tables: video_schema.sql).
--
-- Executed by faceanon.store.ResultsDB once, when it creates a new database. A database
-- written by an older faceanon is upgraded in place by the migrations in store.py (they
-- end in exactly these tables); one written by a newer faceanon is refused.
-- Table names are a contract with the report and the benchmark suite; columns may be added
-- (with a new schema version and a migration).
--
-- Timestamps are TIMESTAMP in UTC. JSON columns hold objects written by the library.
-- There are no FOREIGN KEY constraints on purpose: DuckDB checks them row by row on
-- insert (too slow for millions of scores) and refuses to delete a parent row in the
-- same transaction as its children. ResultsDB.delete_run removes children explicitly.
-- The metric views are not stored here: see metrics.sql.

-- One row: the schema version of this file (ResultsDB.SCHEMA_VERSION).
CREATE TABLE schema_version (
    version INTEGER NOT NULL
);
INSERT INTO schema_version VALUES (5);

CREATE SEQUENCE runs_id_seq START 1;
CREATE SEQUENCE cases_id_seq START 1;

-- One benchmark invocation.
CREATE TABLE runs (
    id                  BIGINT PRIMARY KEY DEFAULT nextval('runs_id_seq'),
    name                VARCHAR,
    started             TIMESTAMP NOT NULL,          -- UTC
    finished            TIMESTAMP,                   -- UTC, NULL while running
    -- 'crashed': the run's process is gone (or its heartbeat stale) and it never finished
    status              VARCHAR NOT NULL
        CHECK (status IN ('running', 'complete', 'failed', 'interrupted', 'crashed')),
    git_commit          VARCHAR,
    git_dirty           BOOLEAN,
    packages            JSON,                        -- {"numpy": "2.4.6", ...}
    machine             JSON,                        -- {"cpu": ..., "gpu": ..., ...}
    dataset_name        VARCHAR NOT NULL,
    dataset_fingerprint VARCHAR NOT NULL,
    config              JSON,
    -- decision threshold of the metric views for this run's cases (distance <= it matches)
    threshold           DOUBLE NOT NULL,
    methods             JSON,                        -- {"blur": {describe()}, ...}
    host                VARCHAR,                     -- where the writing process runs
    pid                 BIGINT,                      -- ... and its process id there
    heartbeat           TIMESTAMP                    -- UTC, refreshed while it runs
);

-- One (method, k, mode, attack, detector, backend) cell of a run.
CREATE TABLE cases (
    id       BIGINT PRIMARY KEY DEFAULT nextval('cases_id_seq'),
    run_id   BIGINT NOT NULL,
    method   VARCHAR NOT NULL,
    k        BIGINT,                                 -- NULL for methods without a strength
    mode     VARCHAR NOT NULL CHECK (mode IN ('clear', 'naive', 'reverse', 'parrot')),
    attack   VARCHAR NOT NULL DEFAULT 'detect',      -- faceanon.attacks name
    detector VARCHAR NOT NULL,
    backend  VARCHAR NOT NULL,
    options  JSON
);

-- Per original or anonymized image of a run; an anonymized image has one row per attack
-- that processed it (acquired and faces_found are what that attack found; sha256 is the
-- published image's, the same for every attack).
CREATE TABLE images (
    run_id      BIGINT NOT NULL,
    key         VARCHAR NOT NULL,                    -- dataset image key
    role        VARCHAR NOT NULL CHECK (role IN ('original', 'anonymized')),
    method      VARCHAR,                             -- NULL for originals
    k           BIGINT,
    sha256      VARCHAR,
    acquired    BOOLEAN,                             -- an embedding could be computed
    faces_found INTEGER,
    backend     VARCHAR,
    attack      VARCHAR NOT NULL DEFAULT 'detect'     -- faceanon.attacks name; originals 'detect'
);

-- What an attack that learns (faceanon.attacks.Attack.prepare) learned from, per (run,
-- method, k, attack): Attack.training_record(), e.g. its data split, settings, loss curve.
CREATE TABLE attack_trainings (
    run_id BIGINT NOT NULL,
    method VARCHAR NOT NULL,
    k      BIGINT,
    attack VARCHAR NOT NULL,
    record JSON
);

-- What anonymization cost, per anonymized image of a run (faceanon.utility.image_record):
-- one row per (method, k, key), shared by every mode and attack of the variant. Counts are
-- of the original's faces; nme is the mean over the nme_faces faces where it is defined
-- (NULL when none); *_face over the anonymized regions; psnr is +inf for equal pixels.
-- Created by the migration to version 3 as well (store._migrate_2_to_3): keep them equal.
CREATE TABLE IF NOT EXISTS image_utility (
    run_id           BIGINT NOT NULL,
    method           VARCHAR NOT NULL,
    k                BIGINT,
    key              VARCHAR NOT NULL,
    faces            INTEGER NOT NULL,               -- faces of the original
    retained_hog     INTEGER NOT NULL,               -- ... still found by dlib HOG
    landmarks_placed INTEGER NOT NULL,               -- ... with 68 landmarks placed
    nme              DOUBLE,                         -- landmark error / inter-ocular distance
    nme_faces        INTEGER NOT NULL,
    ssim             DOUBLE,
    psnr             DOUBLE,
    ssim_face        DOUBLE,
    psnr_face        DOUBLE,
    changed_outside  BIGINT NOT NULL,                -- pixels changed outside the regions
    seconds          DOUBLE                          -- what measuring it took
);

-- One comparison (probe vs gallery image) of a case. Distance lower = more similar;
-- NULL when either side has no embedding (failure to acquire / to enrol).
-- probe_acquired / gallery_enrolled tell FTA and FTE apart; when NULL the metric views
-- fall back to "some comparison of that image has a distance".
CREATE TABLE scores (
    case_id          BIGINT NOT NULL,
    probe            VARCHAR NOT NULL,
    gallery          VARCHAR NOT NULL,
    mated            BOOLEAN NOT NULL,
    distance         DOUBLE,
    probe_acquired   BOOLEAN,
    gallery_enrolled BOOLEAN
);

-- Embedding cache, shared by all runs (never deleted with a run).
-- model says exactly what computed the embedding (ResultsDB: sha256 of the model files and
-- the library versions), so a changed model never reuses another model's embeddings.
-- embedding is NULL when no face was found ("no face" is cached too).
CREATE TABLE embeddings (
    backend     VARCHAR NOT NULL,
    model       VARCHAR NOT NULL,
    sha256      VARCHAR NOT NULL,
    embedding   DOUBLE[],
    faces_found INTEGER NOT NULL,
    created     TIMESTAMP,                           -- UTC
    PRIMARY KEY (backend, model, sha256)
);

-- Benchmark timings per case (pytest-benchmark style statistics).
CREATE TABLE timings (
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

-- Extra thresholds the `confusion` view reports (besides each run's decision threshold);
-- a new database gets store.CONFUSION_THRESHOLDS (the decision threshold of
-- faceanon.protocol and 0.575, the seed study's DeepPrivacy table).
CREATE TABLE confusion_thresholds (
    threshold DOUBLE PRIMARY KEY
);
