"""The femoral-neck localiser in the pipeline, as plain functions (the network itself is osteo_model/roi*.py,
its registry osteo_mlflow/roi.py): locating an image's hips and the refresh's locate step (locate), the
localiser's training set, split and evaluation (training), its negative views (negatives), its confidence
measured (reliability), and the LabelImg worklist of images waiting for a person's box (worklist)."""
