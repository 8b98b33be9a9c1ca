"""Evaluation on the host: metrics, bootstrap intervals, comparisons, probes and plots."""
