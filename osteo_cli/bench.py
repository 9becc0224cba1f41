"""`osteo bench [--quick] [--json] [--out DIR]`: every stage against its plain baseline (bench/)."""

from __future__ import annotations


def cmd_bench(args) -> int:
    from bench.run import main_args

    return main_args(args)


def register(add) -> None:
    from bench.run import add_arguments

    p = add("bench", cmd_bench, "every stage against its plain-library baseline, in one run")
    add_arguments(p)
