"""Tune stage: a Ray Tune sweep over parts of the config (encoder x targets x weights ...), each trial a short
pre-training scored by a downstream probe; the best trials fine-tuned fully; a Markdown + PNG report."""
