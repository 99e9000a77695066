#!/usr/bin/env bash
# The whole pipeline on the built-in demo catalog with SmolLM2-135M-Instruct, offline on CPU:
# data -> SIDs -> instruction data -> LoRA SFT -> GRPO -> evaluation -> a chat answer.
# About 15-20 minutes on 2 CPU cores; artifacts in runs/demo/, metrics in runs/demo/metrics.json.
# This file is the reference for the pipeline: each line is one stage, each stage one recipe.
set -euo pipefail
cd "$(dirname "$0")/../.."
. .ci/setup.sh
# The demo uses only the embedded models (SmolLM2 GGUF, MiniLM): never wait on a hub.
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
R=recipes/cpu_demo
rm -rf runs/demo
align prepare $R/prepare.yaml
align sids $R/sids.yaml
align data $R/data.yaml
align sft $R/sft.yaml
align rl $R/rl.yaml
align eval $R/eval.yaml
# A chat request in words, naming the last two purchases of the first test user.
request=$(python - <<'PY'
import json
items = {json.loads(l)["item_id"]: json.loads(l)["title"] for l in open("runs/demo/catalog/items.jsonl")}
user = json.loads(open("runs/demo/catalog/test.jsonl").readline())
a, b = (items[i] for i in user["history"][-2:])
print(f"I bought {a} and then {b}. What should I get next?")
PY
)
echo "request: $request"
align chat --run_dir runs/demo --message "$request"
