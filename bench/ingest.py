"""Header ingest (read + hash + parse + pseudonymise + DB writes, batched as the refresh does) against
its floor (read + SHA-256 + header parse of the same bytes, one process); reruns (unchanged files are
not opened) against the plain `pydicom.dcmread(stop_before_pixels=True)` loop over the same files."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import reduce
from operator import add
from pathlib import Path
from typing import Any

import pydicom

from bench.common import best_of, cores, row, target, timed
from bench.corpus import KEY
from osteo.ingest.report import StageCounts


def plain_header_loop(paths: list[str]) -> int:
    """The simplest honest baseline: read every header, keep a few fields (no hashing, no DB)."""
    out = []
    for p in paths:
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - a plain loop skips what it cannot read
            continue
        out.append((str(ds.SOPInstanceUID), str(ds.PatientID), str(ds.StudyDate)))
    return len(out)


def hash_only_loop(paths: list[str]) -> int:
    """Read and SHA-256 every whole file, nothing else: the part of our ingest that the baseline skips."""
    return len({hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths})


def floor_loop(paths: list[str]) -> int:
    """The floor of a first ingest, in one process: read each file once, SHA-256 it and parse its
    header (pydicom, stop_before_pixels) from the same bytes; no pseudonym, no checks, no database."""
    n = 0
    for p in paths:
        data = Path(p).read_bytes()
        hashlib.sha256(data).hexdigest()
        try:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - a plain loop skips what it cannot read
            continue
        n += bool(str(ds.SOPInstanceUID))
    return n


def _database(tmp: Path):
    from db import create_schema, make_engine, make_session_factory

    engine = make_engine(f"sqlite:///{Path(tempfile.mkdtemp(dir=tmp)) / 'ingest.sqlite'}")
    create_schema(engine)
    return engine, make_session_factory(engine)


def ours_ingest(paths: list[str], workers: int, batch_size: int, tmp: Path) -> int:
    """osteo.ingest.refresh.ingest_dicom over batches, into a fresh SQLite database (as the flow calls it)."""
    from osteo.ingest.refresh import batches, ingest_dicom

    engine, factory = _database(tmp)
    images = 0
    for batch in batches(paths, batch_size):
        images += ingest_dicom(factory, batch, KEY, workers=workers).added
    engine.dispose()
    return images


def archive(paths: list[str], days: int = 2) -> None:
    """Stamp files as written days ago, as a night finds its archive (fresher stamps are not trusted:
    osteo_common.files.RACY_NS, and those files would be read again)."""
    when = time.time_ns() - days * 86_400 * 10**9
    for p in paths:
        os.utime(p, ns=(when, when))


def rerun(factory, folder: Path, workers: int, batch_size: int, threads: int = 0) -> StageCounts:
    """A night as the flow runs its DICOM part: the streamed walk, each batch to the ingest (`threads`: the
    walk's and the stats' threads, io_threads; 0 chooses by the file system)."""
    from osteo.ingest.refresh import batches, ingest_dicom, walk

    return reduce(add, (ingest_dicom(factory, b, KEY, workers=workers, io_threads=threads)
                        for b in batches(walk(folder, threads=threads), batch_size)), StageCounts())


SHARE_LATENCY_S = 0.001  # a stat or a folder listing on the simulated share (NFS over a LAN: 0.2 to 1 ms a call)


@contextmanager
def slow_share(latency_s: float) -> Iterator[list[float]]:
    """Every os.stat and os.scandir of this process waits latency_s first, as each is a round trip to the
    server on a network share; a sleep releases the GIL as a blocking NFS call does (the bench only).
    Yields the list of the waits as slept (a loaded machine oversleeps: the row says by how much)."""
    real_stat, real_scandir = os.stat, os.scandir
    waits: list[float] = []

    def wait() -> None:
        t0 = time.perf_counter()
        time.sleep(latency_s)
        waits.append(time.perf_counter() - t0)

    def stat(path, *args, **kwargs):
        wait()
        return real_stat(path, *args, **kwargs)

    def scandir(path="."):
        wait()
        return real_scandir(path)

    os.stat, os.scandir = stat, scandir
    try:
        yield waits
    finally:
        os.stat, os.scandir = real_stat, real_scandir


def share_row(factory, folder: Path, n: int, workers: int, batch_size: int) -> dict:
    """The unchanged rerun on a simulated share, with the network's threads against one thread."""
    from osteo.ingest.discovery import NETWORK_THREADS

    with slow_share(SHARE_LATENCY_S) as waits:
        t_one, one = timed(lambda: rerun(factory, folder, workers, batch_size, threads=1))
        t_many, many = timed(lambda: rerun(factory, folder, workers, batch_size, threads=NETWORK_THREADS))
    ms = SHARE_LATENCY_S * 1e3
    slept = sum(waits) / max(1, len(waits)) * 1e3
    night = 1_000_000 * t_many / n
    return row(f"rerun {n} unchanged files on a simulated share (+{ms:g} ms a stat and a listing), "
               f"{NETWORK_THREADS} threads", stage="ingest", ours=n / t_many, baseline=n / t_one, unit="files/s",
               work=f"{n} files", ours_s=round(t_many, 4), baseline_s=round(t_one, 4),
               note=f"baseline: the same rerun with 1 thread ({t_one / n * 1e6:.0f} us a file, against "
                    f"{t_many / n * 1e6:.0f} us with {NETWORK_THREADS}); same counts: {one == many}; "
                    f"{len(waits)} calls waited {slept:.2f} ms each on average; "
                    f"1M unchanged files at this rate: {night / 60:.1f} min ({1_000_000 * t_one / n / 60:.1f} with "
                    "1 thread)")


def rerun_rows(paths: list[str], sources: list[tuple[str, str]] | None, tmp: Path, repeats: int, batch_size: int,
               plain_rate: float, floor_rate: float, workers: int) -> list[dict]:
    """Reruns over an archive of these files (hard links in a folder of their own): unchanged, then
    with 1% new files (new ones for each repeat, so each repeat reads only its own)."""
    from bench.corpus import make_copies

    n = len(paths)
    folder = Path(tempfile.mkdtemp(dir=tmp)) / "archive"
    for i, p in enumerate(paths):
        d = folder / f"D{i // 100:04d}"
        d.mkdir(parents=True, exist_ok=True)
        os.link(p, d / Path(p).name)
    archive([str(p) for p in folder.rglob("*.dcm")])
    engine, factory = _database(tmp)
    first = rerun(factory, folder, workers, batch_size)
    counts: list[StageCounts] = []
    t_same = best_of(lambda: counts.append(rerun(factory, folder, workers, batch_size)), repeats)
    same = counts[-1]
    rows = [row(f"rerun {n} unchanged files", stage="ingest", ours=n / t_same, baseline=plain_rate, unit="files/s",
                work=f"{n} files", goal=target("ratio", ">=", 40), ours_s=round(t_same, 4),
                baseline_s=round(n / plain_rate, 3),
                note=f"ours: walk + stat + one lookup per batch of {batch_size}, {same.files - same.unchanged} files "
                     f"read of {same.files} (first ingest read {first.files}); baseline: the plain header loop"),
            share_row(factory, folder, n, workers, batch_size)]
    if sources:
        k = max(1, n // 100)
        times, reads = [], []
        for r in range(max(1, repeats)):  # new files for each repeat, made (untimed) just before it
            archive(make_copies(sources, folder / f"new{r}", k, start=10**9 + r * k))
            t, c = timed(lambda: rerun(factory, folder, workers, batch_size))
            times.append(t)
            reads.append((c.files - c.unchanged, c.added))
        t_new = min(times)
        budget = t_same + k / floor_rate  # the unchanged rerun + the new files at the floor's cost
        only = "only the new ones" if all(r == (k, k) for r in reads) else "NOT only the new ones"
        rows.append(row(f"rerun {n} files + {k} new (1%)", stage="ingest", ours=t_new, baseline=budget, unit="s",
                        work=f"{n + k} files", goal=target("ratio", "<=", 2), ours_s=round(t_new, 4),
                        baseline_s=round(budget, 4),
                        note=f"(files read, images added) per repeat: {reads}: {only}; baseline: the unchanged "
                             f"rerun {t_same:.3f} s + {k} files at the floor's {floor_rate:.0f} files/s; a repeat "
                             "also walks the earlier repeats' (then unchanged) new files"))
    engine.dispose()
    return rows


def run(paths_by_size: dict[int, list[str]], tmp: Path, repeats: int, batch_size: int,
        sources: list[tuple[str, str]] | None = None) -> list[dict]:
    rows = []
    n_cores = cores()
    for n, paths in paths_by_size.items():
        # warm the page cache and the imports for both sides
        plain_header_loop(paths[:50])
        t_plain = best_of(lambda: plain_header_loop(paths), repeats)
        t_hash = best_of(lambda: hash_only_loop(paths), repeats)
        t_floor = best_of(lambda: floor_loop(paths), repeats)
        t_one = best_of(lambda: ours_ingest(paths, 1, batch_size, tmp), repeats)
        t_all = best_of(lambda: ours_ingest(paths, n_cores, batch_size, tmp), repeats)
        work = f"{n} files"
        common: dict[str, Any] = dict(stage="ingest", baseline=n / t_plain, unit="files/s", work=work,
                                      baseline_s=round(t_plain, 3))
        floor: dict[str, Any] = dict(stage="ingest", baseline=n / t_floor, unit="files/s", work=work,
                                     baseline_s=round(t_floor, 3))
        rows.append(row(f"ingest {n} files: floor (read + SHA-256 + header parse), 1 process", ours=n / t_floor,
                        ours_s=round(t_floor, 3), note="not an ingest: each file read once, hashed and its header "
                        "parsed from the same bytes (dcmread stop_before_pixels); the ingest rows' baseline", **common))
        rows.append(row(f"ingest {n} files, 1 worker", ours=n / t_one, goal=target("ratio", ">=", 0.9),
                        ours_s=round(t_one, 3), note="ours: read once + hash + parse + checks + pseudonymise + SQLite "
                        "bulk writes, first ingest; baseline: the floor row", **floor))
        rows.append(row(f"ingest {n} files: read + SHA-256 only, 1 process", ours=n / t_hash, ours_s=round(t_hash, 3),
                        note="not an ingest: the whole-file read and hash that idempotency and lineage need, "
                        "alone; baseline: the plain dcmread(stop_before_pixels=True) header loop", **common))
        rows.append(row(f"ingest {n} files, {n_cores} workers", ours=n / t_all,
                        goal=target("ratio", ">=", 1.7) if n_cores >= 2 else None,
                        ours_s=round(t_all, 3), note=f"ours with workers={n_cores} (batches of {batch_size}), "
                        "first ingest, vs the 1-process floor row", **floor))
        rows += rerun_rows(paths, sources, tmp, repeats, batch_size, n / t_plain, n / t_floor, n_cores)
    return rows
