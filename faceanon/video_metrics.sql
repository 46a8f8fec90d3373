-- faceanon video metric views (TEMP, made on every connection that reads metrics, as
-- metrics.sql). A person is identified in a frame when a face of the frame is nearest to
-- them among the gallery at distance <= the case's threshold (faceanon.video_bench).

-- One row per (video case, person).
--   leak_rate            share of the case's frames in which the person is identified
--   identified_anywhere  identified in at least one frame
--   visible_frames       frames in which the person is identified on the clear clip of the
--                        same run (same clip, same number of frames) by the same attack, or,
--                        when the run has no clear case of that attack (the filter attacks),
--                        by 'located' (the descriptor in the face boxes, which the filter
--                        attacks add their restoration to), else by 'detect'
--   visible_baseline     the attack of that clear case
--   leak_rate_visible    leak rate over those frames (NULL when there are none)
--   best_distance        the person's nearest face over all frames
CREATE OR REPLACE TEMP VIEW video_person_metrics AS
WITH people AS (
    SELECT id AS case_id, unnest(people) AS person, generate_subscripts(people, 1) AS i
    FROM video_cases
),
per_frame AS (
    SELECT p.case_id, p.person, f.frame,
           list_contains(f.identified, p.person) AS hit,
           f.distances[p.i] AS distance
    FROM people p JOIN video_frames f ON f.case_id = p.case_id
),
baseline AS (
    SELECT c.id AS case_id, z.id AS clear_id, z.attack AS clear_attack,
           row_number() OVER (PARTITION BY c.id ORDER BY
               CASE WHEN z.attack = c.attack THEN 0 WHEN z.attack = 'located' THEN 1
                    WHEN z.attack = 'detect' THEN 2 ELSE 3 END, z.id) AS choice
    FROM video_cases c
    JOIN video_cases z ON z.run_id = c.run_id AND z.method = 'clear'
                       AND z.clip_sha256 = c.clip_sha256 AND z.frames = c.frames
),
clear_hits AS (
    SELECT b.case_id, pf.person, pf.frame
    FROM baseline b JOIN per_frame pf ON pf.case_id = b.clear_id AND pf.hit
    WHERE b.choice = 1
)
SELECT c.id AS case_id, c.run_id, c.label, c.method, c.k, c.attack, pf.person,
       any_value(b.clear_attack) AS visible_baseline,
       count(*) AS frames,
       count(*) FILTER (WHERE pf.hit) AS identified_frames,
       avg(CASE WHEN pf.hit THEN 1.0 ELSE 0.0 END) AS leak_rate,
       bool_or(pf.hit) AS identified_anywhere,
       count(h.frame) AS visible_frames,
       CASE WHEN count(h.frame) = 0 THEN NULL
            ELSE (count(*) FILTER (WHERE pf.hit AND h.frame IS NOT NULL))::DOUBLE
                 / count(h.frame) END AS leak_rate_visible,
       min(pf.distance) AS best_distance
FROM video_cases c
JOIN per_frame pf ON pf.case_id = c.id
LEFT JOIN clear_hits h ON h.case_id = c.id AND h.person = pf.person AND h.frame = pf.frame
LEFT JOIN baseline b ON b.case_id = c.id AND b.choice = 1
GROUP BY c.id, c.run_id, c.label, c.method, c.k, c.attack, pf.person;

-- One row per video case.
--   uncovered_frame_share  share of frames with a reference face not covered (>= 90 % of its
--                          box inside the anonymized boxes; faceanon.video_bench.COVERED_SHARE)
--   uncovered_face_share   share of reference faces not covered
--   max_leak_rate          the worst person's leak rate
--   people_identified      people identified in at least one frame
CREATE OR REPLACE TEMP VIEW video_case_metrics AS
SELECT c.id AS case_id, c.run_id, c.label, c.method, c.k, c.attack, c.clip, c.frames,
       c.frame_rate, c.tracking, c.reference_detector, c.threshold, c.anonymize_fps,
       c.anonymize_seconds,
       (SELECT count(*) FROM video_frames f WHERE f.case_id = c.id) AS frames_measured,
       (SELECT avg(CASE WHEN f.uncovered_faces > 0 THEN 1.0 ELSE 0.0 END)
          FROM video_frames f WHERE f.case_id = c.id) AS uncovered_frame_share,
       (SELECT CASE WHEN sum(f.reference_faces) = 0 THEN 0.0
                    ELSE sum(f.uncovered_faces)::DOUBLE / sum(f.reference_faces) END
          FROM video_frames f WHERE f.case_id = c.id) AS uncovered_face_share,
       (SELECT max(p.leak_rate) FROM video_person_metrics p WHERE p.case_id = c.id)
           AS max_leak_rate,
       (SELECT list(p.person ORDER BY p.person) FILTER (WHERE p.identified_anywhere)
          FROM video_person_metrics p WHERE p.case_id = c.id) AS people_identified
FROM video_cases c;
