-- faceanon results database: the video benchmark's tables (schema version 3).
--
-- Executed by faceanon.store.ResultsDB after schema.sql when it creates a database, and by
-- the migration to version 3 when it upgrades one: every statement is idempotent.
-- The metric views over these tables are in video_metrics.sql.

CREATE SEQUENCE IF NOT EXISTS video_cases_id_seq START 1;

-- One (method, k, attack) case of the video benchmark: a clip anonymized once, then
-- searched frame by frame by one attack.
CREATE TABLE IF NOT EXISTS video_cases (
    id                 BIGINT PRIMARY KEY DEFAULT nextval('video_cases_id_seq'),
    run_id             BIGINT NOT NULL,
    label              VARCHAR NOT NULL,        -- test id, e.g. video-blur-k15-detect
    method             VARCHAR NOT NULL,        -- 'clear' for the original clip
    k                  BIGINT,                  -- NULL for methods without a strength
    attack             VARCHAR NOT NULL,        -- faceanon.attacks name
    clip               VARCHAR NOT NULL,        -- file name of the clip
    clip_sha256        VARCHAR NOT NULL,
    frames             BIGINT NOT NULL,         -- frames measured (the first N of the clip)
    frame_rate         DOUBLE NOT NULL,         -- the clip's frames per second
    people             VARCHAR[] NOT NULL,      -- the gallery, in the order that breaks ties
    threshold          DOUBLE NOT NULL,         -- distance <= threshold identifies
    reference_detector VARCHAR NOT NULL,        -- judges "detected but not covered"
    tracking           BOOLEAN NOT NULL,
    anonymize_seconds  DOUBLE,                  -- wall time of anonymize_video; NULL: clear
    anonymize_fps      DOUBLE,                  -- frames / anonymize_seconds
    strip_frame        BIGINT,                  -- the frame kept for the report's strip
    strip_png          BLOB,                    -- ... as a small PNG
    settings           JSON                     -- detector, seed, tracker, attacker, ...
);

-- One row per frame of a case: what the attack found, whom it identified, and which faces
-- of the original frame (found by the reference detector) the anonymized boxes left bare.
CREATE TABLE IF NOT EXISTS video_frames (
    case_id          BIGINT NOT NULL,
    frame            BIGINT NOT NULL,           -- index in the clip, from 0
    time             DOUBLE,                    -- presentation time in seconds
    faces_found      BIGINT NOT NULL,           -- faces the attack encoded
    identified       VARCHAR[] NOT NULL,        -- people identified in this frame
    distances        DOUBLE[] NOT NULL,         -- per person (video_cases.people order);
                                                -- NULL: no face found
    anonymized_boxes BIGINT NOT NULL,           -- boxes the anonymizer hid
    reference_faces  BIGINT NOT NULL,           -- faces the reference detector found
    uncovered_faces  BIGINT NOT NULL,           -- ... not covered by anonymized boxes
    coverage         DOUBLE[] NOT NULL          -- per reference face: share covered
);
