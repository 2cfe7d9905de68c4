"""Evaluation of frozen (or fine-tuned) encoders: token features, classification heads, the probe command."""
