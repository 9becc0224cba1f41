"""Schema upgrade: a PostgreSQL database at revision 0001 (the release before migrations) holding n images
and n DEXA exams, upgraded to head as `osteo db upgrade` does it (under the refresh lock), against one plain
rewrite of its biggest table (CREATE TABLE ... AS SELECT). The row also records how long the refresh lock
was held around the upgrade and the table locks left behind once it returned (goal 0)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.common import row, timed
from bench.pairing import PG_URL, _label, load, make_rows, pg_available, pg_schema


def fresh_schema(n: int):
    """An engine on a new schema at revision 0001, the schema's name and its drop."""
    from db.migrate import FIRST, run_upgrade

    schema = f"osteo_bench_upgrade_{os.getpid()}_{n}"
    engine, drop = pg_schema(schema)
    run_upgrade(engine, FIRST)
    return engine, schema, drop


def fill_per_image(engine, n: int) -> None:
    """What a night writes per image besides the image row, server-side: a source file, a human box and an
    export each, so that the revisions' CHECK constraints validate a million rows of each table."""
    from sqlalchemy import text

    now = "TIMESTAMP '2024-01-01'"
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO source_file (id, kind, path, sha256, size_bytes, first_seen, status) "  # id 1: load()'s
            f"SELECT g + 1, 'dicom', '/bench/' || g || '.dcm', md5(g::text) || md5(g::text), 1, {now}, 'ingested' "
            "FROM generate_series(1, :n) g"), {"n": n})
        conn.execute(text(
            "INSERT INTO annotation (sop_instance_uid, side, source, label, box_xmin, box_ymin, box_xmax, "
            f"box_ymax, ingested_at) SELECT sop_instance_uid, laterality, 'human', 'neck', 1, 1, 9, 9, {now} "
            "FROM dicom_image"))
        conn.execute(text(
            "INSERT INTO export (image_id, side, annotation_id, recipe_digest, transform, status, metal_fraction, "
            f"blur_score, created_at) SELECT i.id, i.laterality, a.id, 'r', '{{}}', 'exported', 0, 1, {now} "
            "FROM dicom_image i JOIN annotation a ON a.sop_instance_uid = i.sop_instance_uid"))
        conn.execute(text("ANALYZE"))


def rewrite_once(engine) -> None:
    """The baseline: one copy of the biggest table, what a migration that rewrote it would at least cost."""
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE bench_rewrite AS SELECT * FROM dicom_image"))
        conn.execute(text("DROP TABLE bench_rewrite"))


def locks_left(engine, schema: str) -> int:
    """Locks any session still holds on the schema's tables once the upgrade returned."""
    from sqlalchemy import text

    with engine.connect() as conn:
        return int(conn.scalar(text(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = :schema AND l.pid <> pg_backend_pid()"),
            {"schema": schema}))


def upgrade_under_lock(url: str, home: Path) -> tuple[float, float, tuple[str, ...]]:
    """`osteo db upgrade`'s path: the refresh lock, then the migrations. (lock held s, upgrade s, revisions)."""
    from db import make_engine
    from db.migrate import upgrade
    from osteo.ingest.lock import refresh_lock
    from osteo.settings import settings_from

    engine = make_engine(url)
    with settings_from({"OSTEO_DATABASE_URL": url, "OSTEO_VAR_DIR": str(home / "var")}) as settings:
        t0 = time.perf_counter()
        with refresh_lock(settings):
            t_upgrade, result = timed(lambda: upgrade(engine))
        held = time.perf_counter() - t0
    engine.dispose()
    return held, t_upgrade, result.applied


def run(sizes: list[int], tmp: Path) -> tuple[list[dict], dict]:
    why = pg_available()
    if why is not None:
        return [], {"postgresql": f"not reachable ({why})"}
    rows = []
    for n in sizes:
        img, exm = make_rows(n)
        engine, schema, drop = fresh_schema(n)
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"  # the upgrade opens its own engine, as the CLI does
        try:
            t_load, _ = timed(lambda: (load(engine, img, exm), fill_per_image(engine, n)))
            t_rewrite, _ = timed(lambda: rewrite_once(engine))
            held, t_upgrade, applied = upgrade_under_lock(url, tmp)
            left = locks_left(engine, schema)
        finally:
            drop()
        rows.append(row(
            f"upgrade postgresql {_label(n)} images 0001 -> head", stage="upgrade", ours=t_upgrade,
            baseline=t_rewrite, unit="s",
            work=f"{n} images (a source file, box and export each), {len(exm)} DEXA exams; revisions "
                 f"{', '.join(applied)}",
            refresh_lock_held_s=round(held, 2), table_locks_left=left,
            load_s=round(t_load, 2),
            note="ours: osteo's upgrade (each revision in a transaction) inside the refresh lock; baseline: one "
                 "CREATE TABLE AS SELECT of dicom_image (ratio); the issue sets no time; table locks are taken "
                 "inside the refresh lock's span and table_locks_left (after it returned) must be 0"))
    return rows, {"postgresql": "reachable"}
