# The README's two commands: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
# pyright's wrapper would otherwise ask PyPI for a newer release on every run
export PYRIGHT_PYTHON_IGNORE_WARNINGS := 1

# Debian packages the suite needs: Chromium for the page's browser test (Playwright drives it; its own
# browser download is not used), CJK fonts so the Traditional Chinese page renders in screenshots, and
# dicom3tools (dciodvfy) to check that the synthetic DICOM is conformant, and Orthanc with its DICOMweb
# plug-in, the PACS the suite's fixtures start on 127.0.0.1, and Node.js, which runs pyright (the PyPI wheel
# bundles pyright's JavaScript but not a runtime; without one it would try to download it)
SYSTEM_PACKAGES := chromium fonts-noto-cjk dicom3tools orthanc orthanc-dicomweb nodejs

.PHONY: demo test install system-packages screenshots clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# a checkout's database from an earlier release is upgraded first (a copy of it is kept beside it)
demo: $(STAMP)
	$(VENV)/bin/osteo db upgrade
	$(VENV)/bin/osteo demo

system-packages:
	@test -x /usr/bin/chromium && test -x /usr/bin/dciodvfy && test -f /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc && \
	  test -x /usr/sbin/Orthanc && test -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so && test -x /usr/bin/node || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES); }

# pyright ([tool.pyright] in pyproject.toml: basic mode over the product packages) fails the run on any error;
# about 45 s on an idle 2-core machine
test: $(STAMP) system-packages
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pyright
	$(PY) -m pytest

# re-take the page's screenshots into docs/screenshots/ (the browser test, saving its pictures)
screenshots: $(STAMP) system-packages
	OSTEO_UPDATE_SCREENSHOTS=1 $(PY) -m pytest tests/osteo_service/test_browser.py -q

clean:
	rm -rf var data mlruns/mlflow.db mlruns/artifacts
