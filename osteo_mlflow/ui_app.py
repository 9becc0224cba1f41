"""The MLflow UI that `osteo ui` serves: MLflow's own app, told in the page that nothing reports usage.

MLflow's page (mlflow 3.17) sends its usage events to its server (POST /ajax-api/3.0/mlflow/ui-telemetry);
with MLFLOW_DISABLE_TELEMETRY=true the server forwards nothing and its GET answers
`disable_ui_telemetry: true`. But the page still shows "MLflow collects usage data ..." and starts its
telemetry worker, both decided by browser-storage keys only (the bundle's
`mlflow.telemetry.info.alert.dismissed` and `mlflow.settings.telemetry.enabled`, version 1), which no server
setting touches. So the page is served with a first script that sets them, before MLflow's own script runs:
the notice is not shown and the worker never starts, on every load (a setting flipped in the page does not
stick). Registered as the `mlflow.app` entry point `osteo-ui` (pyproject.toml): `mlflow ui --app-name osteo-ui`.

The same script makes the model-training view the one a person lands on (issue 26). MLflow 3.17's page
chooses between its GenAI view (an experiment opens on traces and tokens, with an assistant panel) and its
model-training view (the runs table) by the `workflowType` query parameter, else by the browser-storage key
`mlflow.workflowType` (version 1), whose default is GenAI whatever the experiment's `mlflow.experimentKind`
tag says; no server setting exists. The script sets the key to model training when the browser has none, so a
person who switches to GenAI in the sidebar keeps that choice. `osteo-ui-auth` is the same page inside MLflow's
own basic-auth app (`mlflow server --app-name osteo-ui-auth`: users, and permissions per registered model;
docs/production.md), for the production tracking server.
"""

from __future__ import annotations

DISMISSED_KEY = "mlflow.telemetry.info.alert.dismissed_v1"  # the usage notice, closed
ENABLED_KEY = "mlflow.settings.telemetry.enabled_v1"  # the page's own collection switch
WORKFLOW_KEY = "mlflow.workflowType_v1"  # GenAI ("genai", the page's default) or model training
MODEL_TRAINING = "machine_learning"
NO_USAGE_DATA = ('<script>/* osteo: this installation reports nothing and opens on the runs '
                 '(osteo_mlflow/ui_app.py) */ try {'
                 f' localStorage.setItem("{DISMISSED_KEY}", "true");'
                 f' localStorage.setItem("{ENABLED_KEY}", "false");'
                 f' if (localStorage.getItem("{WORKFLOW_KEY}") === null)'
                 f' localStorage.setItem("{WORKFLOW_KEY}", \'"{MODEL_TRAINING}"\');'
                 ' } catch (e) {}</script>').encode()


def with_no_usage_data(html: bytes) -> bytes:
    """The page with the script first in its head (unchanged when it has no head)."""
    return html.replace(b"<head>", b"<head>" + NO_USAGE_DATA, 1)


def _page_says_no_usage_data(response):
    """Flask's after-request hook: MLflow's page (the only HTML it serves) gets the script."""
    if response.status_code != 200 or response.mimetype != "text/html":
        return response
    response.direct_passthrough = False  # send_from_directory streams the file; it is read here instead
    response.set_data(with_no_usage_data(response.get_data()))
    # never a 304 against the page as MLflow wrote it, cached by a browser from a plain `mlflow ui`
    for header in ("ETag", "Last-Modified"):
        response.headers.pop(header, None)
    response.headers["Cache-Control"] = "no-store"
    return response


def create_app():
    """The ASGI app uvicorn runs (a factory: `mlflow ui` only imports this module to find it)."""
    from mlflow.server import app as flask_app
    from mlflow.server.fastapi_app import app

    flask_app.after_request(_page_says_no_usage_data)
    return app


def create_app_with_auth():
    """The same page inside MLflow's basic-auth app (its users, its permissions per experiment and registered
    model, its config from MLFLOW_AUTH_CONFIG_PATH): the ASGI app a production `mlflow server` runs."""
    from mlflow.server import app as flask_app
    from mlflow.server.auth import create_app as basic_auth_app

    flask_app.after_request(_page_says_no_usage_data)
    return basic_auth_app(flask_app)
