"""Fits BG/NBD, Pareto/NBD and Gamma-Gamma with lifetimes 0.11 on the same purchases as
unify.fit_predictions, times them, and compares the parameters, log-likelihoods and per-customer
predictions with ours (exported by benches/segments.sh).

    python lifetimes_compare.py TRANSACTIONS.csv CALIBRATION_END OURS_FITS.csv OURS_PREDICTIONS.csv

TRANSACTIONS.csv: customer_id, order_date, amount. Summaries follow the papers (and ours): one
purchase per customer and day, frequency = purchase days - 1, recency and age in weeks, mean
spend over the repeat purchase days.
"""
import sys
import time
import warnings

import numpy as np
import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter, ParetoNBDFitter

warnings.filterwarnings("ignore")
tx_path, calibration_end, fits_path, predictions_path = sys.argv[1:5]
end = pd.Timestamp(calibration_end)

started = time.perf_counter()
tx = pd.read_csv(tx_path, parse_dates=["order_date"])
tx = tx[tx.order_date <= end]
days = tx.groupby(["customer_id", "order_date"], as_index=False).amount.sum()
days = days[days.amount >= 0].sort_values(["customer_id", "order_date"])
first = days.groupby("customer_id").order_date.transform("min")
summary = days.groupby("customer_id").agg(
    n=("order_date", "size"), first=("order_date", "min"), last=("order_date", "max"), total=("amount", "sum"))
first_amount = days[days.order_date == first].groupby("customer_id").amount.sum()
summary["frequency"] = summary.n - 1
summary["recency"] = (summary["last"] - summary["first"]).dt.days / 7.0
summary["T"] = (end - summary["first"]).dt.days / 7.0
summary["mean_spend"] = (summary.total - first_amount) / summary.frequency.replace(0, np.nan)
summary_seconds = time.perf_counter() - started
print(f"lifetimes: {len(summary)} customers summarised from {len(tx)} transactions in {summary_seconds:.2f} s (pandas)")

ours = pd.read_csv(fits_path).set_index("model")
ours_pred = pd.read_csv(predictions_path).set_index("customer_id")
horizon = float(ours_pred.horizon_weeks.iloc[0])


def line(name, params, ll, seconds, ours_params, ours_ll, ours_seconds):
    rel = max(abs(params[k] / ours_params[k] - 1) for k in params)
    print(f"{name:11} lifetimes {', '.join(f'{k} {v:.4f}' for k, v in params.items())}, LL {ll:.2f}, fit {seconds:.2f} s")
    print(f"{'':11} ours      {', '.join(f'{k} {ours_params[k]:.4f}' for k in params)}, LL {ours_ll:.2f}, "
          + (f"fit_predictions {ours_seconds:.2f} s (aggregation + fit + predictions written)"
             if ours_seconds == ours_seconds else "fitted inside the same fit_predictions call"))
    print(f"{'':11} largest parameter difference {100 * rel:.3f}%, LL difference {abs(ll - ours_ll):.3f}")


for name, fitter_class, keys in (("bgnbd", BetaGeoFitter, ["r", "alpha", "a", "b"]),
                                 ("pareto_nbd", ParetoNBDFitter, ["r", "alpha", "s", "beta"])):
    if name not in ours.index:
        continue
    t0 = time.perf_counter()
    f = fitter_class().fit(summary.frequency, summary.recency, summary["T"])
    seconds = time.perf_counter() - t0
    params = {k: float(f.params_[k]) for k in keys}
    # lifetimes' own likelihood at its optimum, summed over customers (its stored value is scaled
    # by the weights of grouped summaries).
    ones = np.ones(len(summary))
    p = np.array([params[k] for k in keys])
    if name == "bgnbd":
        ll = -fitter_class._negative_log_likelihood(np.log(p), summary.frequency.values, summary.recency.values,
                                                    summary["T"].values, ones, 0.0) * len(summary)
    else:
        ll = -fitter_class._negative_log_likelihood(p, summary.frequency.values, summary.recency.values,
                                                    summary["T"].values, ones, 0.0)
    o = ours.loc[name]
    ours_params = {k: float(v) for k, v in zip(keys, o.params.split(";"))}
    line(name, params, ll, seconds, ours_params, o.log_likelihood, o.seconds)
    if name == "bgnbd":
        # Per-customer predictions of ours (the last bgnbd fit) against lifetimes' with our parameters.
        for k, v in ours_params.items():
            f.params_[k] = v
        joined = summary.join(ours_pred, how="inner", rsuffix="_ours")
        alive = f.conditional_probability_alive(joined.frequency, joined.recency, joined["T"])
        expected = f.conditional_expected_number_of_purchases_up_to_time(horizon, joined.frequency, joined.recency, joined["T"])
        print(f"{'':11} predictions, {len(joined)} customers: max |P(alive) diff| {np.max(np.abs(alive - joined.p_alive)):.2e}, "
              f"max |expected purchases diff| {np.max(np.abs(expected - joined.expected_purchases)):.2e}")

repeat = summary[(summary.frequency > 0) & (summary.mean_spend > 0)]  # as ours: no spend, no information
t0 = time.perf_counter()
gg = GammaGammaFitter().fit(repeat.frequency, repeat.mean_spend)
seconds = time.perf_counter() - t0
o = ours.loc["bgnbd"]
ours_gg = {k: float(v) for k, v in zip(["p", "q", "gamma"], o.spend_params.split(";"))}
line("gamma_gamma", {"p": float(gg.params_["p"]), "q": float(gg.params_["q"]), "gamma": float(gg.params_["v"])},
     -gg._negative_log_likelihood_ * len(repeat), seconds, ours_gg, o.spend_log_likelihood, float("nan"))
gg.params_["p"], gg.params_["q"], gg.params_["v"] = ours_gg["p"], ours_gg["q"], ours_gg["gamma"]
joined = repeat.join(ours_pred, how="inner", rsuffix="_ours")
spend = gg.conditional_expected_average_profit(joined.frequency, joined.mean_spend)
print(f"{'':11} expected spend, {len(joined)} repeat buyers: max relative diff "
      f"{np.max(np.abs(spend / joined.expected_spend - 1)):.2e}")
