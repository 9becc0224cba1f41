-- pair_xray_dexa (rule version 1; PostgreSQL and Oracle)
-- Each X-ray pairs with the DEXA exam of the same (pseudonymised) patient whose date is
-- nearest, when the gap is strictly under window_days days. Ties go to the earlier exam,
-- then to the exam of the same side as the image. At most one pair per image.
-- Label: T-score <= osteoporosis_t is osteoporosis (1), else 0; the 3-class label keeps
-- normal (T >= normal_t) and osteopenia apart. (No bind marks in comments: SQLite counts them.)
-- Why this shape: dates are compared as integer day numbers (study_day, exam_day: days since
-- 1970-01-01), so the window is a range on the (patient_id, day) indexes and only the exams
-- inside it are ranked, instead of every exam of the patient.
WITH candidates AS (
    SELECT i.id AS image_id,
           e.id AS dexa_exam_id,
           e.exam_day,
           e.t_score,
           CASE WHEN e.side = i.laterality THEN 0 ELSE 1 END AS other_side,
           ABS(i.study_day - e.exam_day) AS gap_days
      FROM dicom_image i
      JOIN dexa_exam e ON e.patient_id = i.patient_id
                      AND e.exam_day > i.study_day - :window_days
                      AND e.exam_day < i.study_day + :window_days
),
ranked AS (
    SELECT c.*,
           ROW_NUMBER() OVER (PARTITION BY c.image_id
                              ORDER BY c.gap_days, c.exam_day, c.other_side, c.dexa_exam_id) AS rn
      FROM candidates c
)
SELECT r.image_id,
       r.dexa_exam_id,
       r.gap_days,
       r.t_score,
       CASE WHEN r.t_score <= :osteoporosis_t THEN 1 ELSE 0 END AS label,
       CASE WHEN r.t_score <= :osteoporosis_t THEN 'osteoporosis'
            WHEN r.t_score >= :normal_t THEN 'normal'
            ELSE 'osteopenia' END AS label3
  FROM ranked r
 WHERE r.rn = 1
 ORDER BY r.image_id
