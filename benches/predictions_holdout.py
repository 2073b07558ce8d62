"""The holdout check of benches/predictions.sh done with lifetimes 0.11 on the same purchases:
BG/NBD and Pareto/NBD fitted on the calibration period, expected purchases in the holdout per
customer, summed per repeat-purchase bucket of the calibration period (0..6, 7+) and in total,
beside the actual purchases; the error as unify.fit_predictions computes it (Σ customers ·
|mean predicted − mean actual| over the buckets / customers).

    python predictions_holdout.py TRANSACTIONS.csv SPLIT END

TRANSACTIONS.csv: customer_id, order_date, amount (returned orders already left out). A day whose
orders net to zero or more is one purchase, as in unify.fit_predictions; time in weeks.
"""
import sys
import time
import warnings

import pandas as pd
from lifetimes import BetaGeoFitter, ParetoNBDFitter

warnings.filterwarnings("ignore")
tx_path, split, end = sys.argv[1], pd.Timestamp(sys.argv[2]), pd.Timestamp(sys.argv[3])
tx = pd.read_csv(tx_path, parse_dates=["order_date"])
tx = tx[tx.order_date <= end]
days = tx.groupby(["customer_id", "order_date"], as_index=False).amount.sum()
days = days[days.amount >= 0]
cal = days[days.order_date <= split]
g = cal.groupby("customer_id").order_date
s = pd.DataFrame({"frequency": g.size() - 1,
                  "recency": (g.max() - g.min()).dt.days / 7.0,
                  "T": (split - g.min()).dt.days / 7.0})
s["actual"] = days[days.order_date > split].groupby("customer_id").size().reindex(s.index).fillna(0)
weeks = (end - split).days / 7.0
print(f"lifetimes: {len(s)} calibration customers, split {split.date()}, holdout {weeks:.1f} weeks, "
      f"actual holdout purchases {int(s.actual.sum())}")
for name, fitter in (("bgnbd", BetaGeoFitter()), ("pareto_nbd", ParetoNBDFitter())):
    started = time.perf_counter()
    try:
        fitter.fit(s.frequency, s.recency, s["T"])
    except Exception as e:  # lifetimes raises ConvergenceError on some data
        print(f"lifetimes {name}: fit failed: {type(e).__name__}")
        continue
    s["predicted"] = fitter.conditional_expected_number_of_purchases_up_to_time(weeks, s.frequency, s.recency, s["T"])
    seconds = time.perf_counter() - started
    b = s.assign(bucket=s.frequency.clip(upper=7)).groupby("bucket").agg(
        customers=("actual", "size"), predicted=("predicted", "sum"), actual=("actual", "sum"))
    error = (b.predicted - b.actual).abs().sum() / b.customers.sum()
    params = ", ".join(f"{k} {v:.4g}" for k, v in fitter.params_.items())
    print(f"lifetimes {name}: {params}; fit + predictions {seconds:.2f} s; holdout predicted {s.predicted.sum():.1f} "
          f"vs actual {int(s.actual.sum())}; error {error:.4f}")
    print("  bucket customers predicted/customer actual/customer: "
          + "; ".join(f"{'7+' if k == 7 else k}: {r.customers} {r.predicted / r.customers:.3f} {r.actual / r.customers:.3f}"
                      for k, r in b.iterrows()))
