"""Regenerate every figure of the paper and figures/REPORT.md (placeholder until the experiments land)."""
print("relunet: the experiments (issue 5) are not implemented yet; run `python -m pytest -q`.")
