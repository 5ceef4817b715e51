"""The evaluation suite's metrics, one module per family (engine/evaluate.py runs them)."""
