"""`osteo bench`: every stage against its plain-library baseline, in one run (see bench/run.py)."""
