"""A model lineage as one OpenLineage run event (optional, off by default; needs openlineage-python)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

OPENLINEAGE_NAMESPACE = "osteo"


def openlineage_event(lin: dict[str, Any]) -> Any:
    """A model lineage as one OpenLineage COMPLETE run event (needs openlineage-python).

    Job `osteo/train`; run id = the MLflow run id (a UUID); inputs = every source file
    (namespace `file`, versioned by sha256) and the snapshot manifest; output = the model version.
    """
    import uuid

    from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import dataset_version_dataset, job_type_job

    import osteo

    producer = f"https://pypi.org/project/osteo/{osteo.__version__}"
    # a facet's `_producer` is an attrs field, whose __init__ argument attrs names `producer` (no underscore);
    # pyright's attrs support keeps the underscore, hence the two ignores below

    def version(sha: str) -> dict[str, Any]:
        return {"version": dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=sha, producer=producer)}  # pyright: ignore[reportCallIssue]

    m, tr, snap = lin["model"], lin["training_run"], lin["snapshot"]
    inputs = [InputDataset(namespace="file", name=s["path"], facets=version(s["sha256"]))
              for s in lin["source_files"]]
    inputs.append(InputDataset(namespace=OPENLINEAGE_NAMESPACE, name=f"snapshot/{snap['digest']}",
                               facets=version(snap["digest"])))
    outputs = [OutputDataset(namespace="mlflow", name=f"models:/{m['name']}/{m['version']}",
                             facets=version(str(m["version"])))]
    created = tr.get("created") or dt.datetime.now(dt.UTC).isoformat()
    if "+" not in created[10:] and not created.endswith("Z"):
        created += "Z"  # the database keeps UTC without a zone
    return RunEvent(
        eventType=RunState.COMPLETE, eventTime=created, producer=producer,
        run=Run(runId=str(uuid.UUID(hex=tr["mlflow_run_id"]))),
        job=Job(namespace=OPENLINEAGE_NAMESPACE, name="train",
                facets={"jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="OSTEO",
                                                                jobType="TRAINING",
                                                                producer=producer)}),  # pyright: ignore[reportCallIssue]
        inputs=inputs, outputs=outputs,
    )


def emit_openlineage(lin: dict[str, Any], target: str) -> str:
    """Send the model's run event to a file (appended, one JSON per line) or an http(s) endpoint."""
    from openlineage.client import OpenLineageClient

    if target.startswith(("http://", "https://")):
        from openlineage.client.transport.http import HttpConfig, HttpTransport

        transport: Any = HttpTransport(HttpConfig(url=target))
    else:
        from openlineage.client.transport.file import FileConfig, FileTransport

        Path(target).parent.mkdir(parents=True, exist_ok=True)
        transport = FileTransport(FileConfig(log_file_path=target, append=True))
    event = openlineage_event(lin)
    OpenLineageClient(transport=transport).emit(event)
    return event.run.runId
