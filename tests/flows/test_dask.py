"""Scale-out: the task runner follows the settings, and the refresh on a Dask cluster gives the same
counts as on the default thread runner."""

from __future__ import annotations

import pytest


def test_task_runner_follows_the_settings(tmp_path):
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.runner import SettingsTaskRunner, make_task_runner
    from osteo.settings import Settings
    from tests.helpers import isolated_settings

    assert isinstance(make_task_runner(Settings(dask_address="")), ThreadPoolTaskRunner)
    from prefect_dask import DaskTaskRunner

    runner = make_task_runner(Settings(dask_address="tcp://10.0.0.5:8786"))
    assert isinstance(runner, DaskTaskRunner) and runner.address == "tcp://10.0.0.5:8786"
    # the flows' placeholder reads the settings when a run starts, not at import
    with isolated_settings(tmp_path, OSTEO_DASK_ADDRESS="tcp://10.0.0.6:8786"):
        chosen = SettingsTaskRunner().duplicate()
        assert isinstance(chosen, DaskTaskRunner) and chosen.address == "tcp://10.0.0.6:8786"
    with isolated_settings(tmp_path):
        assert isinstance(SettingsTaskRunner().duplicate(), ThreadPoolTaskRunner)


def test_flows_use_the_settings_runner():
    from flows.nightly import nightly_flow  # noqa: F401 - loads without a runner choice at import
    from flows.refresh import refresh_flow
    from flows.runner import SettingsTaskRunner
    from flows.screen import screen_flow
    from flows.train import train_flow

    assert isinstance(refresh_flow.task_runner, SettingsTaskRunner)
    assert isinstance(screen_flow.task_runner, SettingsTaskRunner)  # screening batches go to Dask as exports do
    assert isinstance(train_flow.task_runner, SettingsTaskRunner)


@pytest.mark.slow
def test_refresh_on_a_dask_cluster_matches_the_default_runner(tmp_path, prefect_harness):
    from distributed import Client, LocalCluster, get_task_stream

    from osteo.ingest.options import RefreshOptions
    from tests.helpers import isolated_settings, synthetic_cohort, tree_digest

    cohort = synthetic_cohort(tmp_path / "cohort", patients=20, seed=1)
    options = RefreshOptions(dicom_dir=str(cohort / "dicom"), dexa_dir=str(cohort / "dexa"),
                             annotations_dir=str(cohort / "annotations"))
    common = {"OSTEO_PSEUDONYM_KEY": "dask-test-key-0123456789abcdef", "OSTEO_WORKERS": "1",
              "OSTEO_EXPORT_BATCH_SIZE": "4"}  # several export batches, so the workers share them

    with isolated_settings(tmp_path / "threads", **common):
        from flows.refresh import refresh_flow

        default = refresh_flow(options=options)
        default_pngs = tree_digest(tmp_path / "threads" / "data" / "export")

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            with isolated_settings(tmp_path / "dask", OSTEO_DASK_ADDRESS=cluster.scheduler_address, **common):
                with get_task_stream(client) as stream:
                    on_dask = refresh_flow(options=options)
            # every export batch ran as a task on the cluster's workers
            n_batches = -(-on_dask.totals.exported // 4)
            assert len(stream.data) >= n_batches, "the export batches did not run on Dask"
            assert {t["worker"] for t in stream.data}, "no Dask worker ran a task"
    assert default.totals.exported > 0
    assert on_dask.this_run == default.this_run and on_dask.totals == default.totals
    assert tree_digest(tmp_path / "dask" / "data" / "export") == default_pngs

