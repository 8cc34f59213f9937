"""Bridges to other tools: lm-evaluation-harness (the ``steerbench`` model type and its
tasks) and SAE training with sae-lens."""
