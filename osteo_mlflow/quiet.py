"""MLflow's own words while osteo logs or registers a model: osteo says what happened, once, in its own.

`log_model(..., registered_model_name=...)` prints "Successfully registered model ..." and "Created
version ...", and warns in colour that no `input_example` was given (our signature is explicit, and an
example would run the model at logging time). Inside `quiet_mlflow()` MLflow's event stream (its
eprint and its loggers' handler) is off and that warning is not shown; an error still raises.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM


@contextmanager
def quiet_mlflow() -> Iterator[None]:
    was = MLFLOW_LOGGING_STREAM.enabled
    MLFLOW_LOGGING_STREAM.enabled = False  # what mlflow.utils.logging_utils.disable_logging() does
    try:
        with warnings.catch_warnings():
            # the message starts with a colour code: matched anywhere, not at its start
            warnings.filterwarnings("ignore", message=r".*An input example was not provided", category=UserWarning)
            yield
    finally:
        MLFLOW_LOGGING_STREAM.enabled = was
