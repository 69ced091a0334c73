"""False-alarm rate of drift rules per feature-window on synthetic no-drift windows (the table in
mlvigil/alerting/README.md): `PYTHONPATH=. python bench/drift_false_alarms.py [windows]`.

Uses the unit tests' simulator (tests/alerting/test_significance.py: a fresh reference sample of
N = 10,000 per window, 10 quantile bins, window counts from the same distribution)."""

import sys

import numpy as np

from mlvigil.alerting import Rule
from tests.alerting.test_significance import no_drift_rows

RULES = {
    "chi2 a=0.05": Rule("c", "data", "psi", test="chi2", alpha=0.05, threshold=0.0, op=">=", min_samples=1),
    "psi a=0.05": Rule("p", "data", "psi", test="psi", alpha=0.05, threshold=0.0, op=">=", min_samples=1),
    "chi2 a=0.01": Rule("c1", "data", "psi", test="chi2", alpha=0.01, threshold=0.0, op=">=", min_samples=1),
    "PSI > 0.2": Rule("f", "data", "psi", threshold=0.2),
    "PSI > 0.1": Rule("f1", "data", "psi", threshold=0.1),
}


def main(windows: int) -> None:
    print("| n | " + " | ".join(RULES) + " |")
    for n in (50, 100, 200, 500, 1000, 5000, 50_000):
        rows = no_drift_rows(np.random.default_rng(n), n, windows)
        rates = [np.mean([r.observe(x[0]).hit for x in rows]) for r in RULES.values()]
        print(f"| {n} | " + " | ".join(f"{v:.4f}" for v in rates) + " |", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4000)
