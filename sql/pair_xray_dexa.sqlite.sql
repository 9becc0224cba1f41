-- pair_xray_dexa (rule version 1), SQLite override. Same rule as pair_xray_dexa.sql: the exam of
-- the same patient nearest in days, gap strictly under the window, ties to the earlier exam,
-- then to the exam of the same side as the image, then to the lower id.
-- Why this shape: on integer day numbers the window is a range on ix_dexa_exam_patient_day, and
-- an exam is kept when no exam of the patient ranks before it (NOT EXISTS over the days that are
-- nearer, or as near and earlier, and over its own day): index probes, no ranking sort of the
-- candidates. The X-rays are walked in (patient, day) index order so that each patient's exams
-- are probed together (1M x 1M: a sixth less time than walking them in id order, sort included).
SELECT i.id AS image_id,
       e.id AS dexa_exam_id,
       abs(i.study_day - e.exam_day) AS gap_days,
       e.t_score,
       CASE WHEN e.t_score <= :osteoporosis_t THEN 1 ELSE 0 END AS label,
       CASE WHEN e.t_score <= :osteoporosis_t THEN 'osteoporosis'
            WHEN e.t_score >= :normal_t THEN 'normal'
            ELSE 'osteopenia' END AS label3
  FROM dicom_image i INDEXED BY ix_dicom_image_patient_day
  JOIN dexa_exam e
    ON e.patient_id = i.patient_id
   AND e.exam_day > i.study_day - :window_days
   AND e.exam_day < i.study_day + :window_days
 WHERE NOT EXISTS (
           -- with d = e.exam_day and s = i.study_day, the days that rank before d or tie with it
           -- are min(d, 2s - d) .. max(d, 2s - d - 1): nearer days, the day as near but earlier, d
           SELECT 1
             FROM dexa_exam o
            WHERE o.patient_id = e.patient_id
              AND o.exam_day BETWEEN min(e.exam_day, 2 * i.study_day - e.exam_day)
                                 AND max(e.exam_day, 2 * i.study_day - e.exam_day - 1)
              AND (o.exam_day <> e.exam_day
                   OR (CASE WHEN o.side = i.laterality THEN 0 ELSE 1 END, o.id)
                    < (CASE WHEN e.side = i.laterality THEN 0 ELSE 1 END, e.id)))
 ORDER BY i.id
