#!/usr/bin/env bash
# Run the test suite offline on CPU, creating .venv on first use. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python -m pytest -q "$@"
