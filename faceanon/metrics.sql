-- faceanon metric views (ISO/IEC 19795-1 vocabulary).
--
-- faceanon.store.ResultsDB creates them as TEMP views on every connection that reads
-- metrics, never in the database file: whichever faceanon reads a database computes the
-- metrics with its own definitions, and read-only connections get them too.
--
-- CONVENTIONS
-- ===========
-- Polarity. `scores.distance` is a dissimilarity: lower = more similar. A comparison is a
--   MATCH at threshold t when distance <= t (ties with t match). NULL distance means one
--   side has no embedding (probe not acquired or gallery image not enrolled); NULL never
--   matches, at any threshold (it behaves as distance = +infinity).
--
-- Two scopes.
--   classic (fmr, fnmr, eer, det_curve.fmr/fnmr, fnmr_at_fmr_*): over the comparisons where
--     both sides have an embedding (distance NOT NULL); n_acquired counts them.
--       FMR(t)  = #{non-mated, distance <= t} / #{non-mated, distance NOT NULL}
--       FNMR(t) = #{mated, distance >  t} / #{mated, distance NOT NULL}
--   all ("attacker's view": geer, tar_at_fmr_1pct_all, rank1, *_all): over ALL comparisons,
--     NULL counted as a non-match:
--       FMR_all(t)  = #{non-mated, distance <= t} / n_nonmated
--       FNMR_all(t) = (n_mated - #{mated, distance <= t}) / n_mated
--
-- Thresholds. The curves are evaluated at every DISTINCT non-NULL distance of the case
--   (tied comparisons, mated or not, switch to "match" together, so a tie is a diagonal
--   step of the DET curve, never an arbitrary order), plus an implicit start point at
--   t = -infinity where FMR = 0 and FNMR = 1.
--
-- EER. Walk the thresholds upwards; FNMR - FMR strictly decreases. Take the first point
--   P1 where FMR >= FNMR and the point P0 just before it (the -infinity start point if P1
--   is the smallest distance). EER is the crossing of the straight segment P0-P1 with the
--   diagonal: a = (FNMR0 - FMR0) / ((FNMR0 - FMR0) - (FNMR1 - FMR1)),
--   eer = FMR0 + a (FMR1 - FMR0) (= FNMR0 + a (FNMR1 - FNMR0)), and
--   eer_threshold = t0 + a (t1 - t0), or t1 when P0 is the -infinity start point.
--   An exact crossing at a point gives a = 1 (eer = FMR1 = FNMR1, threshold t1).
--   Ties: a tie between mated and non-mated scores makes P0-P1 a diagonal step; the EER is
--   read on that step (so all-equal distances give eer = 0.5).
--   One class empty (no mated or no non-mated acquired comparison): FMR or FNMR is
--   undefined, so eer, eer_threshold and fnmr_at_fmr_* are NULL; the rate of the empty
--   class (fmr / fnmr at the decision threshold, det_curve.fmr / fnmr) is NULL, the
--   other one is still given. No acquired comparison at all: all classic rates NULL.
--   With both classes present the classic curves always cross (at the largest distance
--   FMR = 1 and FNMR = 0).
--
-- GEER (EER of the all-comparison curves, i.e. of the generalized rates). Same
--   construction on FMR_all / FNMR_all; geer_crossed = true. NULLs never match, so the
--   curves may never cross: with 92 % of probes not acquired FNMR_all >= 0.92 while
--   FMR_all <= 0.08. ISO/IEC 19795-1 has no equal error rate there, so geer and
--   geer_threshold are NULL ("not reached") and geer_crossed = false; never read such a
--   case as "geer = 0.5", and never rank or compare cases by a geer that was not reached.
--   geer and geer_crossed are NULL when n_mated or n_nonmated is 0. When every probe is
--   compared with the same gallery and no gallery image failed to enrol, FMR_all =
--   FMR (1 - FTA) and FNMR_all = FTA + FNMR (1 - FTA) at every threshold, so geer is the
--   EER of gfar/gfrr.

-- Rates at a fixed FMR. fnmr_at_fmr_1pct = FNMR at the largest threshold whose
--   FMR <= 1 % (compared exactly, in integers); the start point counts, so if even the
--   smallest distance gives FMR > 1 %, the value is 1. fnmr_at_fmr_01pct likewise for
--   0.1 %. tar_at_fmr_1pct_all = 1 - FNMR_all at the largest threshold whose
--   FMR_all <= 1 %: the share of ALL mated comparisons (= mated probes when each probe
--   has one mated gallery image) that an attacker links at that operating point; NULL
--   when n_mated or n_nonmated is 0.
--
-- Decision threshold. Each run's own runs.threshold (default 0.6, face_recognition's
--   tolerance; ResultsDB.start_run(threshold=...)), so one database holds runs measured at
--   different thresholds and a new run never changes the numbers of an earlier one.
--   fmr, fnmr, fmr_all, fnmr_all are read there, and so are the generalized rates of
--   ISO/IEC 19795-1 (verification with failures to acquire and to enrol):
--     gfar = FMR (1 - FTA) (1 - FTE)
--     gfrr = FTE + (1 - FTE) FTA + (1 - FTE) (1 - FTA) FNMR
--   FTE counts because reverse and parrot enrol anonymized faces. With FTA = 1 or
--   FTE = 1 nothing is compared, FMR and FNMR are undefined, and the formulas' limits
--   gfar = 0, gfrr = 1 are reported. Otherwise gfar is NULL when FMR is undefined (no
--   acquired non-mated comparison) and gfrr when FNMR is.

-- FTA / FTE. fta = share of the case's distinct probes not acquired; fte = share of the
--   distinct gallery images not enrolled. An image is acquired/enrolled when
--   scores.probe_acquired / gallery_enrolled says so; when that column is NULL, when some
--   comparison of the image has a non-NULL distance.
--
-- rank1. Closed-set identification over ALL probes that have at least one mated gallery
--   image (NULL when there is none): a probe's nearest gallery image is the one with the
--   smallest non-NULL distance; hit when it is mated. A probe with no face (all
--   distances NULL) is a miss, and so is one whose mated comparisons are all NULL.
--   Ties at the minimum get fractional credit: the mated share among the tied nearest
--   images (a constant distance gives chance level, not 100 %).
--
-- Unchanged images. n_anonymized = distinct images of the run anonymized by the case's
--   method at its k and processed by the case's attack (images, role 'anonymized', the
--   case's attack: attacks never mix); n_unchanged = how many of them have the
--   pixel sha256 of their original: published exactly as they were. Both NULL for the
--   clear baseline and for a case whose run recorded no images.
--
-- Views: case_metrics (one row per case), confusion (per case, threshold, scope),
-- det_curve (per case and distinct distance). Helper views: score_points, case_totals.

-- Per case and distinct non-NULL distance: counts there (m mated, n non-mated), the
-- cumulative counts up to and including it (cm, cn), and the previous distinct distance.
CREATE OR REPLACE TEMP VIEW score_points AS
WITH grouped AS (
    SELECT case_id, distance,
           -- INTEGER, so that the running sums stay BIGINT (HUGEINT sums are slow)
           (count(*) FILTER (WHERE mated))::INTEGER     AS m,
           (count(*) FILTER (WHERE NOT mated))::INTEGER AS n
    FROM scores
    WHERE distance IS NOT NULL
    GROUP BY case_id, distance
)
SELECT case_id, distance, m, n,
       sum(m) OVER w              AS cm,
       sum(n) OVER w              AS cn,
       lag(distance) OVER w       AS prev_distance
FROM grouped
WINDOW w AS (PARTITION BY case_id ORDER BY distance
             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW);

-- Per case comparison counts.
CREATE OR REPLACE TEMP VIEW case_totals AS
SELECT case_id,
       count(*) FILTER (WHERE mated)                  AS n_mated,
       count(*) FILTER (WHERE NOT mated)              AS n_nonmated,
       count(distance)                                AS n_acquired,
       count(distance) FILTER (WHERE mated)           AS n_mated_acquired,
       count(distance) FILTER (WHERE NOT mated)       AS n_nonmated_acquired
FROM scores
GROUP BY case_id;

-- Distance bin (0 .. 1023) of d within a case's [lo, hi] distance range. Monotone in d
-- (ties share a bin); case_metrics uses it to sort only the few bins it needs.
CREATE OR REPLACE TEMP MACRO distance_bin(d, lo, hi) AS
    CASE WHEN hi > lo THEN least(floor((d - lo) / (hi - lo) * 1024), 1023)::INTEGER
         ELSE 0 END;

-- case_metrics columns: case_id; n_mated, n_nonmated (all comparisons), n_acquired,
-- n_mated_acquired, n_nonmated_acquired (comparisons with a distance: the classic rates
-- rest on them), n_probes, n_gallery (distinct images); fta, fte; eer,
-- eer_threshold; threshold (the decision threshold) with fmr, fnmr, gfar, gfrr, fmr_all,
-- fnmr_all there; fnmr_at_fmr_1pct, fnmr_at_fmr_01pct; geer, geer_threshold,
-- geer_crossed; tar_at_fmr_1pct_all; rank1; n_anonymized, n_unchanged. Rates are
-- fractions in [0, 1].
--
-- case_metrics finds each "first threshold where a monotone condition holds" (EER
-- crossings, FMR above 1 % / 0.1 %) without sorting whole cases: (1) count the scores of
-- each case in 1024 distance bins and accumulate over bins; (2) the bin where a condition
-- first holds at its end holds the first point where it holds; (3) sort only those bins,
-- offset by the counts of the bins before them. Exact: the result is the same as a scan
-- of all distinct distances (tests/test_metrics.py checks it against numpy).
CREATE OR REPLACE TEMP VIEW case_metrics AS
WITH
thr AS (SELECT c.id AS case_id, r.threshold FROM cases c JOIN runs r ON r.id = c.run_id),
tot AS (
    SELECT s.case_id,
           count(*) FILTER (WHERE s.mated)                          AS n_mated,
           count(*) FILTER (WHERE NOT s.mated)                      AS n_nonmated,
           count(s.distance)                                        AS n_acquired,
           count(s.distance) FILTER (WHERE s.mated)                 AS n_mated_acquired,
           count(s.distance) FILTER (WHERE NOT s.mated)             AS n_nonmated_acquired,
           min(s.distance)                                          AS d_lo,
           max(s.distance)                                          AS d_hi,
           count(*) FILTER (WHERE s.mated AND s.distance <= thr.threshold)     AS cm_at_thr,
           count(*) FILTER (WHERE NOT s.mated AND s.distance <= thr.threshold) AS cn_at_thr
    FROM scores s JOIN thr USING (case_id)
    GROUP BY s.case_id
),
-- (1) per case and distance bin: counts, cumulative counts at the bin's end
bins AS (
    SELECT case_id, bin, m, n,
           sum(m) OVER w AS cm, sum(n) OVER w AS cn,
           lag(hi) OVER w AS prev_hi
    FROM (
        SELECT s.case_id, distance_bin(s.distance, t.d_lo, t.d_hi) AS bin,
               (count(*) FILTER (WHERE s.mated))::INTEGER     AS m,
               (count(*) FILTER (WHERE NOT s.mated))::INTEGER AS n,
               max(s.distance)                                AS hi
        FROM scores s JOIN tot t USING (case_id)
        WHERE s.distance IS NOT NULL
        GROUP BY ALL
    )
    WINDOW w AS (PARTITION BY case_id ORDER BY bin ROWS UNBOUNDED PRECEDING)
),
-- (2) bins in which one of the conditions first holds (true at the bin's end, false at
-- the end of the bin before). Conditions, cross-multiplied to stay exact in integers:
--   A  FMR >= FNMR            cn * Ma >= (Ma - cm) * Na
--   B  FMR_all >= FNMR_all    cn * M  >= (M - cm) * N
--   C  FMR > 1 %              cn * 100  > Na
--   D  FMR > 0.1 %            cn * 1000 > Na
--   E  FMR_all > 1 %          cn * 100  > N
cand AS (
    SELECT b.case_id, b.bin, b.cm - b.m AS cm0, b.cn - b.n AS cn0, b.prev_hi
    FROM bins b JOIN tot t USING (case_id)
    WHERE (b.cn * t.n_mated_acquired >= (t.n_mated_acquired - b.cm) * t.n_nonmated_acquired
           AND NOT (b.cn - b.n) * t.n_mated_acquired
                   >= (t.n_mated_acquired - b.cm + b.m) * t.n_nonmated_acquired)
       OR (b.cn * t.n_mated >= (t.n_mated - b.cm) * t.n_nonmated
           AND NOT (b.cn - b.n) * t.n_mated >= (t.n_mated - b.cm + b.m) * t.n_nonmated)
       OR (b.cn * 100 > t.n_nonmated_acquired AND NOT (b.cn - b.n) * 100 > t.n_nonmated_acquired)
       OR (b.cn * 1000 > t.n_nonmated_acquired
           AND NOT (b.cn - b.n) * 1000 > t.n_nonmated_acquired)
       OR (b.cn * 100 > t.n_nonmated AND NOT (b.cn - b.n) * 100 > t.n_nonmated)
),
-- (3) the distinct distances of those bins with exact cumulative counts
cand_points AS (
    SELECT case_id, distance, m, n,
           cm0 + sum(m) OVER w                       AS cm,
           cn0 + sum(n) OVER w                       AS cn,
           coalesce(lag(distance) OVER w, prev_hi)   AS prev_distance
    FROM (
        SELECT s.case_id, c.bin, c.cm0, c.cn0, c.prev_hi, s.distance,
               (count(*) FILTER (WHERE s.mated))::INTEGER     AS m,
               (count(*) FILTER (WHERE NOT s.mated))::INTEGER AS n
        FROM scores s
        JOIN tot t USING (case_id)
        JOIN cand c ON c.case_id = s.case_id
                   AND c.bin = distance_bin(s.distance, t.d_lo, t.d_hi)
        WHERE s.distance IS NOT NULL
        GROUP BY ALL
    )
    WINDOW w AS (PARTITION BY case_id, bin ORDER BY distance ROWS UNBOUNDED PRECEDING)
),
pts AS (
    SELECT t.case_id,
           any_value(t.d_hi) AS d_hi,
           arg_min({'d': p.distance, 'pd': p.prev_distance,
                    'cm': p.cm, 'cn': p.cn, 'm': p.m, 'n': p.n}, p.distance)
               FILTER (WHERE p.cn * t.n_mated_acquired
                             >= (t.n_mated_acquired - p.cm) * t.n_nonmated_acquired)
               AS x,
           arg_min({'d': p.distance, 'pd': p.prev_distance,
                    'cm': p.cm, 'cn': p.cn, 'm': p.m, 'n': p.n}, p.distance)
               FILTER (WHERE p.cn * t.n_mated >= (t.n_mated - p.cm) * t.n_nonmated)
               AS xa,
           -- cumulative mated count at the point before the first point above the FMR
           arg_min(p.cm - p.m, p.distance) FILTER (WHERE p.cn * 100 > t.n_nonmated_acquired)
               AS cm_before_1pct,
           arg_min(p.cm - p.m, p.distance) FILTER (WHERE p.cn * 1000 > t.n_nonmated_acquired)
               AS cm_before_01pct,
           arg_min(p.cm - p.m, p.distance) FILTER (WHERE p.cn * 100 > t.n_nonmated)
               AS cm_before_1pct_all
    FROM tot t
    LEFT JOIN cand_points p USING (case_id)
    GROUP BY t.case_id
),
probes AS (
    SELECT case_id, probe,
           coalesce(bool_or(probe_acquired), bool_or(distance IS NOT NULL)) AS acquired,
           bool_or(mated)                                 AS has_mated,
           min(distance) FILTER (WHERE mated)             AS dm,
           min(distance) FILTER (WHERE NOT mated)         AS dn
    FROM scores
    GROUP BY case_id, probe
),
-- probes whose nearest mated and nearest non-mated distances tie: mated share there
tied AS (
    SELECT s.case_id, s.probe, avg(s.mated::DOUBLE) AS credit
    FROM scores s
    SEMI JOIN (SELECT case_id, probe, dm FROM probes WHERE dm = dn) q
        ON s.case_id = q.case_id AND s.probe = q.probe AND s.distance = q.dm
    GROUP BY s.case_id, s.probe
),
probe_stats AS (
    SELECT p.case_id,
           count(*)                                   AS n_probes,
           count(*) FILTER (WHERE NOT p.acquired)     AS n_probes_failed,
           sum(CASE
                   WHEN p.dm IS NULL THEN 0.0                        -- no face / no mated score
                   WHEN p.dn IS NULL OR p.dm < p.dn THEN 1.0
                   WHEN p.dm > p.dn THEN 0.0
                   ELSE tied.credit
               END) FILTER (WHERE p.has_mated)         AS rank1_hits,
           count(*) FILTER (WHERE p.has_mated)        AS n_rank1_probes
    FROM probes p
    LEFT JOIN tied USING (case_id, probe)
    GROUP BY p.case_id
),
gallery_stats AS (
    SELECT case_id,
           count(*)                               AS n_gallery,
           count(*) FILTER (WHERE NOT enrolled)   AS n_gallery_failed
    FROM (
        SELECT case_id, gallery,
               coalesce(bool_or(gallery_enrolled), bool_or(distance IS NOT NULL)) AS enrolled
        FROM scores
        GROUP BY case_id, gallery
    )
    GROUP BY case_id
),
unchanged AS (
    SELECT c.id AS case_id,
           count(DISTINCT a.key)                                    AS n_anonymized,
           count(DISTINCT a.key) FILTER (WHERE a.sha256 = o.sha256) AS n_unchanged
    FROM cases c
    JOIN images a ON a.run_id = c.run_id AND a.role = 'anonymized'
                 AND a.method = c.method AND a.k IS NOT DISTINCT FROM c.k
                 AND a.attack = c.attack
    LEFT JOIN images o ON o.run_id = c.run_id AND o.role = 'original' AND o.key = a.key
    WHERE c.mode <> 'clear'
    GROUP BY c.id
),
rates AS (
    SELECT c.id AS case_id,
           thr.threshold,
           coalesce(t.n_mated, 0)    AS n_mated,
           coalesce(t.n_nonmated, 0) AS n_nonmated,
           coalesce(t.n_acquired, 0) AS n_acquired,
           t.n_mated_acquired, t.n_nonmated_acquired,
           coalesce(ps.n_probes, 0) AS n_probes, coalesce(gs.n_gallery, 0) AS n_gallery,
           ps.n_probes_failed / nullif(ps.n_probes, 0)    AS fta,
           gs.n_gallery_failed / nullif(gs.n_gallery, 0)  AS fte,
           -- classic EER
           CASE WHEN t.n_mated_acquired > 0 AND t.n_nonmated_acquired > 0 THEN
               {'fa0': (pts.x.cn - pts.x.n) / t.n_nonmated_acquired,
                'fr0': (t.n_mated_acquired - pts.x.cm + pts.x.m) / t.n_mated_acquired,
                'fa1': pts.x.cn / t.n_nonmated_acquired,
                'fr1': (t.n_mated_acquired - pts.x.cm) / t.n_mated_acquired,
                'd': pts.x.d, 'pd': pts.x.pd}
           END AS e,
           CASE WHEN t.n_mated > 0 AND t.n_nonmated > 0 AND pts.xa.d IS NOT NULL THEN
               {'fa0': (pts.xa.cn - pts.xa.n) / t.n_nonmated,
                'fr0': (t.n_mated - pts.xa.cm + pts.xa.m) / t.n_mated,
                'fa1': pts.xa.cn / t.n_nonmated,
                'fr1': (t.n_mated - pts.xa.cm) / t.n_mated,
                'd': pts.xa.d, 'pd': pts.xa.pd}
           END AS g,
           t.n_mated > 0 AND t.n_nonmated > 0 AS both_classes,
           -- no point above the FMR: every acquired mated comparison matches
           CASE WHEN t.n_mated_acquired > 0 AND t.n_nonmated_acquired > 0 THEN
               (t.n_mated_acquired - coalesce(pts.cm_before_1pct, t.n_mated_acquired))
               / t.n_mated_acquired END                                   AS fnmr_1,
           CASE WHEN t.n_mated_acquired > 0 AND t.n_nonmated_acquired > 0 THEN
               (t.n_mated_acquired - coalesce(pts.cm_before_01pct, t.n_mated_acquired))
               / t.n_mated_acquired END                                   AS fnmr_01,
           CASE WHEN t.n_mated > 0 AND t.n_nonmated > 0 THEN
               coalesce(pts.cm_before_1pct_all, t.n_mated_acquired) / t.n_mated
           END                                                            AS tar_all_1,
           t.cn_at_thr / nullif(t.n_nonmated_acquired, 0)                 AS fmr,
           (t.n_mated_acquired - t.cm_at_thr) / nullif(t.n_mated_acquired, 0) AS fnmr,
           t.cn_at_thr / nullif(t.n_nonmated, 0)                          AS fmr_all,
           (t.n_mated - t.cm_at_thr) / nullif(t.n_mated, 0)              AS fnmr_all,
           ps.rank1_hits / nullif(ps.n_rank1_probes, 0)                   AS rank1,
           u.n_anonymized, u.n_unchanged
    FROM cases c
    JOIN thr                  ON thr.case_id = c.id
    LEFT JOIN tot t           ON t.case_id = c.id
    LEFT JOIN pts             ON pts.case_id = c.id
    LEFT JOIN probe_stats ps  ON ps.case_id = c.id
    LEFT JOIN gallery_stats gs ON gs.case_id = c.id
    LEFT JOIN unchanged u     ON u.case_id = c.id
),
interp AS (
    SELECT *,
           (e.fr0 - e.fa0) / ((e.fr0 - e.fa0) - (e.fr1 - e.fa1)) AS ea,
           (g.fr0 - g.fa0) / ((g.fr0 - g.fa0) - (g.fr1 - g.fa1)) AS ga
    FROM rates
)
SELECT case_id,
       n_mated, n_nonmated, n_acquired,
       coalesce(n_mated_acquired, 0)    AS n_mated_acquired,
       coalesce(n_nonmated_acquired, 0) AS n_nonmated_acquired,
       n_probes, n_gallery,
       fta, fte,
       e.fa0 + ea * (e.fa1 - e.fa0)                                   AS eer,
       CASE WHEN e.pd IS NULL THEN e.d ELSE e.pd + ea * (e.d - e.pd) END AS eer_threshold,
       threshold,
       fmr, fnmr,
       fnmr_1  AS fnmr_at_fmr_1pct,
       fnmr_01 AS fnmr_at_fmr_01pct,
       CASE WHEN fta = 1 OR fte = 1 THEN 0.0
            ELSE fmr * (1 - fta) * (1 - fte) END                       AS gfar,
       CASE WHEN fta = 1 OR fte = 1 THEN 1.0
            ELSE fte + (1 - fte) * fta + (1 - fte) * (1 - fta) * fnmr END AS gfrr,
       fmr_all, fnmr_all,
       g.fa0 + ga * (g.fa1 - g.fa0)                                   AS geer,
       CASE WHEN g.pd IS NULL THEN g.d ELSE g.pd + ga * (g.d - g.pd) END AS geer_threshold,
       CASE WHEN both_classes THEN g IS NOT NULL END                  AS geer_crossed,
       tar_all_1 AS tar_at_fmr_1pct_all,
       rank1,
       n_anonymized, n_unchanged
FROM interp;

-- The 2x2 confusion matrix per case and threshold, in percent of the comparisons of the
-- scope ('acquired': distance NOT NULL; 'all': every comparison, NULL = predicted
-- non-mated), plus the counts. Thresholds: the decision threshold of the case's run and
-- every row of confusion_thresholds (defaults 0.6 and 0.575).
CREATE OR REPLACE TEMP VIEW confusion AS
WITH
th AS (
    SELECT c.id AS case_id, r.threshold FROM cases c JOIN runs r ON r.id = c.run_id
    UNION
    SELECT c.id AS case_id, t.threshold FROM cases c CROSS JOIN confusion_thresholds t
),
counts AS (
    SELECT s.case_id, th.threshold,
           count(*) FILTER (WHERE s.mated AND s.distance <= th.threshold)          AS mm,
           count(*) FILTER (WHERE s.mated AND s.distance > th.threshold)           AS mn,
           count(*) FILTER (WHERE s.mated AND s.distance IS NULL)                  AS m_null,
           count(*) FILTER (WHERE NOT s.mated AND s.distance <= th.threshold)      AS nm,
           count(*) FILTER (WHERE NOT s.mated AND s.distance > th.threshold)       AS nn,
           count(*) FILTER (WHERE NOT s.mated AND s.distance IS NULL)              AS n_null
    FROM scores s
    JOIN th USING (case_id)
    GROUP BY s.case_id, th.threshold
),
scoped AS (
    SELECT case_id, threshold, 'acquired' AS scope,
           mm, mn, nm, nn FROM counts
    UNION ALL
    SELECT case_id, threshold, 'all' AS scope,
           mm, mn + m_null, nm, nn + n_null FROM counts
)
SELECT case_id, threshold, scope,
       mm + mn + nm + nn                               AS n_comparisons,
       mm AS mated_as_mated,       mn AS mated_as_nonmated,
       nm AS nonmated_as_mated,    nn AS nonmated_as_nonmated,
       100.0 * mm / nullif(mm + mn + nm + nn, 0)       AS mated_as_mated_pct,
       100.0 * mn / nullif(mm + mn + nm + nn, 0)       AS mated_as_nonmated_pct,
       100.0 * nm / nullif(mm + mn + nm + nn, 0)       AS nonmated_as_mated_pct,
       100.0 * nn / nullif(mm + mn + nm + nn, 0)       AS nonmated_as_nonmated_pct
FROM scoped;

-- DET curve points per case: one per distinct non-NULL distance (the implicit start
-- point t = -infinity, FMR = 0, FNMR = 1, is not listed). fmr/fnmr are the classic rates
-- (NULL when a class has no acquired comparison), fmr_all/fnmr_all the all-comparison
-- rates (NULL = non-match).
CREATE OR REPLACE TEMP VIEW det_curve AS
SELECT p.case_id,
       p.distance                                                       AS threshold,
       p.cn / nullif(t.n_nonmated_acquired, 0)                          AS fmr,
       (t.n_mated_acquired - p.cm) / nullif(t.n_mated_acquired, 0)      AS fnmr,
       p.cn / nullif(t.n_nonmated, 0)                                   AS fmr_all,
       (t.n_mated - p.cm) / nullif(t.n_mated, 0)                        AS fnmr_all
FROM score_points p
JOIN case_totals t USING (case_id);

-- What anonymization cost, per (run, method, k): the image_utility rows of its anonymized
-- images (one per image, shared by every mode and attack of the variant).
--   retention         = faces still found by dlib HOG / the originals' faces
--   landmarks_placed  = faces with 68 landmarks placed / the originals' faces
--   nme               = mean NME over the faces where it is defined (n_nme_faces),
--                       each image's mean weighted by its faces: lower keeps more pose
--   ssim, ssim_face   = mean over images (whole image / anonymized regions)
--   psnr, psnr_face   = median over images (a mean would be +inf as soon as one image is
--                       unchanged; higher = closer to the original)
--   n_outside_changed = images with a pixel changed outside their regions (must be 0)
-- A share is NULL when its denominator is 0 (no face in any original).
CREATE OR REPLACE TEMP VIEW utility_metrics AS
SELECT run_id, method, k,
       count(*)                                                  AS n_images,
       sum(faces)                                                AS n_faces,
       sum(retained_hog) / nullif(sum(faces), 0)                 AS retention,
       sum(landmarks_placed) / nullif(sum(faces), 0)             AS landmarks_placed,
       sum(nme * nme_faces) / nullif(sum(nme_faces), 0)          AS nme,
       sum(nme_faces)                                            AS n_nme_faces,
       avg(ssim)                                                 AS ssim,
       median(psnr)                                              AS psnr,
       avg(ssim_face)                                            AS ssim_face,
       median(psnr_face)                                         AS psnr_face,
       count(*) FILTER (WHERE changed_outside > 0)               AS n_outside_changed,
       avg(seconds)                                              AS seconds_per_image
FROM image_utility
GROUP BY run_id, method, k;

-- Detection retention by the stronger detectors, from what the detector attacks already
-- saw (faceanon.attacks: detect:retinaface, detect:cnn; nothing is detected again), per
-- (run, method, k, attack): of the anonymized images that attack processed whose original
-- has a face the recognizer found, the share in which the attack's detector still finds a
-- face. Unlike utility_metrics.retention (HOG, matched to the original's face by overlap)
-- any face counts, so a background face found in an image whose main face is hidden counts
-- too: an upper bound. Higher = more still detectable. A (method, k) without a detector
-- attack has no row; one image counts once, whatever cases used it.
CREATE OR REPLACE TEMP VIEW detector_retention AS
WITH anonymized AS (
    SELECT DISTINCT run_id, method, k, attack, key, faces_found > 0 AS found
    FROM images
    WHERE role = 'anonymized' AND attack LIKE 'detect:%'
), originals AS (
    SELECT DISTINCT run_id, key
    FROM images
    WHERE role = 'original' AND acquired
)
SELECT a.run_id, a.method, a.k, a.attack,
       count(*)                                     AS n_images,
       count(*) FILTER (WHERE a.found)              AS n_found,
       count(*) FILTER (WHERE a.found) / count(*)   AS retention
FROM anonymized a
JOIN originals o USING (run_id, key)
GROUP BY a.run_id, a.method, a.k, a.attack;
