-- The metric views of a version 1 database, reduced to what an upgrade meets.
--
-- faceanon before schema versions (up to commit 5d78cdd, faceanon/metrics.sql) stored
-- its metric views in the database file: five persistent views and a macro, reading the
-- tables and the one-row `settings` (the database-wide decision threshold). The upgrade
-- to version 2 drops them all, reads none of them, and every connection then makes its
-- own from today's metrics.sql; so only their names, their kinds and the tables they
-- read matter here, and their bodies (which computed the metrics) are left out.

CREATE OR REPLACE VIEW score_points AS
SELECT case_id, distance, count(*) AS n FROM scores
WHERE distance IS NOT NULL GROUP BY case_id, distance;

CREATE OR REPLACE VIEW case_totals AS
SELECT case_id, count(*) FILTER (WHERE mated) AS n_mated FROM scores GROUP BY case_id;

CREATE OR REPLACE MACRO distance_bin(d, lo, hi) AS
    CASE WHEN hi > lo THEN least(floor((d - lo) / (hi - lo) * 1024), 1023)::INTEGER
         ELSE 0 END;

CREATE OR REPLACE VIEW case_metrics AS
SELECT t.case_id, s.threshold, t.n_mated
FROM case_totals t CROSS JOIN (SELECT threshold FROM settings WHERE id = 1) s;

CREATE OR REPLACE VIEW confusion AS
SELECT p.case_id, s.threshold, sum(p.n) FILTER (WHERE p.distance <= s.threshold) AS matches
FROM score_points p CROSS JOIN (SELECT threshold FROM settings WHERE id = 1) s
GROUP BY p.case_id, s.threshold;

CREATE OR REPLACE VIEW det_curve AS
SELECT case_id, distance AS threshold FROM score_points;
