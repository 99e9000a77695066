"""Training stages: `sft.py` (align sft) and `grpo.py` (align rl), with `lora.py` (adapter + SID rows) and
`rewards.py` (GRPO rewards). Heavy libraries are imported inside functions."""
