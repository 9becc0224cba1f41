-- pair_xray_dexa (rule version 1), PostgreSQL override. Same rule as pair_xray_dexa.sql: the exam of
-- the same patient nearest in days, gap strictly under the window, ties to the earlier exam,
-- then to the exam of the same side as the image, then to the lower id.
-- Why this shape: DISTINCT ON keeps the first row of each image in the rule's order straight from
-- the sort of the in-window candidates, where ROW_NUMBER() numbers every candidate and filters
-- after (1M x 1M: about a sixth less time). Oracle has no DISTINCT ON and keeps the generic file.
SELECT DISTINCT ON (i.id)
       i.id AS image_id,
       e.id AS dexa_exam_id,
       ABS(i.study_day - e.exam_day) AS gap_days,
       e.t_score,
       CASE WHEN e.t_score <= :osteoporosis_t THEN 1 ELSE 0 END AS label,
       CASE WHEN e.t_score <= :osteoporosis_t THEN 'osteoporosis'
            WHEN e.t_score >= :normal_t THEN 'normal'
            ELSE 'osteopenia' END AS label3
  FROM dicom_image i
  JOIN dexa_exam e
    ON e.patient_id = i.patient_id
   AND e.exam_day > i.study_day - :window_days
   AND e.exam_day < i.study_day + :window_days
 ORDER BY i.id,
          ABS(i.study_day - e.exam_day),
          e.exam_day,
          CASE WHEN e.side = i.laterality THEN 0 ELSE 1 END,
          e.id
