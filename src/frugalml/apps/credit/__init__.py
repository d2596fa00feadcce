"""Credit risk: default probabilities from applicant tables (with free text), calibrated,
explained by reason codes, checked for fairness, and turned into a cost-aware cut-off.

The rungs (`scorecard`, `lightgbm`) register like any other; this package adds the data
checks, metrics, decisions and report a risk team reads. Import is light: pandas, optbinning
and LightGBM load when used.
"""
