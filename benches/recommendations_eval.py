#!/usr/bin/env python3
"""Next best product on the UCI Online Retail data: splits, baselines and scoring.

    recommendations_eval.py prep OUT_DIR CSV_GZ
        Line items with a customer and a product code (StockCode of 5 digits, optionally a
        letter: postage, fees, discounts and manual lines are left out). A repeat customer has
        two or more invoices (cancellations, InvoiceNo "C…", are not invoices; their lines net
        out the quantity bought). Test split: each repeat customer's last invoice is hidden;
        what they bought before it (and every line of every other customer) is the history.
        Validation split: the same, one invoice earlier (the history of the test split with each
        repeat customer's last remaining invoice hidden): parameters are tuned on it, never on
        the test split. Writes {test,val}_lines.csv (the history, for the database and for the
        baselines) and {test,val}_truth.csv (customer, product: what the hidden invoice holds
        that the customer had not bought before: every method leaves out what was bought).

    recommendations_eval.py evaluate OUT_DIR OURS_VAL_GLOB OURS_TEST_CSV
        Popularity (all-time buyers, and buyers in the last 30 days of the history) and the `implicit` library (ALS, item-kNN cosine and BM25), each tuned on the
        validation split over a small grid, then scored on the test split beside ours (CSV files
        customer_id, rank, product_id exported from unify.recommendations): hit rate@10 (share of
        customers with at least one hidden product among their 10) and recall@10 (share of the
        hidden products among the 10, averaged over customers).
"""
import csv
import glob
import gzip
import os
import re
import sys
import time
from collections import defaultdict
from datetime import date

N = 10
PRODUCT = re.compile(r"^[0-9]{5}[A-Za-z]*$")


def prep(out, path):
    rows = []
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            code = r["StockCode"].strip()
            if not r["CustomerID"] or not PRODUCT.match(code):
                continue
            rows.append((r["CustomerID"], r["InvoiceNo"], r["InvoiceDate"], code.upper(),
                         r["Description"].strip(), int(r["Quantity"]), r["UnitPrice"]))
    print(f"line items with a customer and a product code: {len(rows):,}")

    def split(lines):
        """(history lines, truth) hiding each repeat customer's last invoice."""
        invoices = defaultdict(set)
        for c, inv, day, *_ in lines:
            if not inv.startswith("C"):
                invoices[c].add((day, inv))
        hidden = {c: max(v) for c, v in invoices.items() if len(v) >= 2}
        history, hidden_items, before = [], defaultdict(set), defaultdict(lambda: defaultdict(int))
        for line in lines:
            c, inv, day = line[0], line[1], line[2]
            h = hidden.get(c)
            if h is None or (day, inv) < h:
                history.append(line)
                before[c][line[3]] += line[5]
            elif (day, inv) == h and line[5] > 0:
                hidden_items[c].add(line[3])
        truth = {c: {p for p in items if before[c].get(p, 0) <= 0} for c, items in hidden_items.items()}
        truth = {c: t for c, t in truth.items() if t}
        return history, truth, len(hidden)

    test_lines, test_truth, test_repeat = split(rows)
    val_lines, val_truth, val_repeat = split(test_lines)
    for name, lines, truth, repeat in (("test", test_lines, test_truth, test_repeat),
                                       ("val", val_lines, val_truth, val_repeat)):
        with open(os.path.join(out, f"{name}_lines.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["customer_id", "invoice", "invoice_date", "stock_code", "description", "quantity", "unit_price"])
            w.writerows(lines)
        with open(os.path.join(out, f"{name}_truth.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["customer_id", "product_id"])
            for c in sorted(truth):
                for p in sorted(truth[c]):
                    w.writerow([c, p])
        print(f"{name} split: {len(lines):,} history lines, {repeat:,} repeat customers, "
              f"{len(truth):,} of them with a new product in the hidden invoice "
              f"({sum(map(len, truth.values())):,} products to find)")


def read_truth(out, name):
    truth = defaultdict(set)
    with open(os.path.join(out, f"{name}_truth.csv"), newline="") as f:
        for r in csv.DictReader(f):
            truth[r["customer_id"]].add(r["product_id"])
    return truth


def read_recs(path):
    recs = defaultdict(list)
    with open(path, newline="") as f:
        for r in sorted(csv.DictReader(f), key=lambda r: (r["customer_id"], int(r["rank"]))):
            recs[r["customer_id"]].append(r["product_id"])
    return recs


def score(recs, truth):
    hits, recall = 0, 0.0
    for c, t in truth.items():
        found = len(set(recs.get(c, [])[:N]) & t)
        hits += found > 0
        recall += found / len(t)
    return hits / len(truth), recall / len(truth)


class Data:
    """The history as a customer × product matrix (net quantity > 0: bought; value: invoices)."""

    def __init__(self, out, name):
        import numpy as np
        from scipy.sparse import csr_matrix
        net = defaultdict(int)
        invoices = defaultdict(set)
        last = {}
        with open(os.path.join(out, f"{name}_lines.csv"), newline="") as f:
            for r in csv.DictReader(f):
                key = (r["customer_id"], r["stock_code"])
                q = int(r["quantity"])
                net[key] += q
                if q > 0:
                    invoices[key].add(r["invoice"])
                    last[key] = max(last.get(key, ""), r["invoice_date"][:10])
        bought = {k: len(invoices[k]) for k, q in net.items() if q > 0 and invoices[k]}
        self.customers = sorted({c for c, _ in bought})
        self.products = sorted({p for _, p in bought})
        ci = {c: i for i, c in enumerate(self.customers)}
        pi = {p: i for i, p in enumerate(self.products)}
        rows = [ci[c] for c, _ in bought]
        cols = [pi[p] for _, p in bought]
        vals = np.array(list(bought.values()), dtype=np.float32)
        self.index = ci
        self.matrix = csr_matrix((vals, (rows, cols)), shape=(len(self.customers), len(self.products)))
        buyers = np.asarray((self.matrix > 0).sum(axis=0)).ravel()
        # Most buyers first, ties by product code (as unify.recommendations does).
        self.popular = sorted(range(len(self.products)), key=lambda j: (-buyers[j], self.products[j]))
        # What sells now: buyers whose last purchase of it is in the last 30 days of the history.
        end = date.fromisoformat(max(last.values()))
        recent = defaultdict(int)
        for k in bought:
            if (end - date.fromisoformat(last[k])).days < 30:
                recent[pi[k[1]]] += 1
        self.trending = sorted(range(len(self.products)), key=lambda j: (-recent[j], -buyers[j], self.products[j]))

    def popularity(self, customers, order=None):
        recs = {}
        for c in customers:
            i = self.index.get(c)
            have = set(self.matrix[i].indices) if i is not None else set()
            recs[c] = [self.products[j] for j in (order or self.popular) if j not in have][:N]
        return recs

    def implicit(self, model, customers):
        import numpy as np
        model.fit(self.matrix, show_progress=False)
        known = [c for c in customers if c in self.index]
        ids = np.array([self.index[c] for c in known])
        items, _ = model.recommend(ids, self.matrix[ids], N=N, filter_already_liked_items=True)
        recs = {c: [self.products[j] for j in row if j >= 0] for c, row in zip(known, items)}
        # Customers unknown to the matrix get the popular products (none in these splits).
        recs.update(self.popularity([c for c in customers if c not in self.index]))
        return recs


def evaluate(out, ours_val_glob, ours_test):
    import warnings
    warnings.simplefilter("ignore")  # implicit's notes on matrix formats and thread pools
    import implicit
    from implicit.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    val_truth, test_truth = read_truth(out, "val"), read_truth(out, "test")
    val, test = Data(out, "val"), Data(out, "test")
    print(f"implicit {implicit.__version__}; validation: {len(val_truth):,} customers, test: {len(test_truth):,} customers")

    grids = {
        "implicit ALS": [dict(factors=f, regularization=r, alpha=a, iterations=15, random_state=42)
                         for f in (64, 128) for r in (0.01, 0.1) for a in (1.0, 10.0)],
        "implicit item-kNN cosine": [dict(K=k) for k in (20, 50, 100, 200)],
        "implicit item-kNN BM25": [dict(K=k, K1=k1, B=b) for k in (50, 100, 200) for k1 in (1.2,) for b in (0.5, 0.75, 1.0)],
    }
    makers = {"implicit ALS": AlternatingLeastSquares, "implicit item-kNN cosine": CosineRecommender,
              "implicit item-kNN BM25": BM25Recommender}
    rows = []
    rows.append(("popularity (buyers)", "-", score(val.popularity(val_truth), val_truth), score(test.popularity(test_truth), test_truth), None))
    rows.append(("popularity, last 30 days", "-", score(val.popularity(val_truth, val.trending), val_truth),
                 score(test.popularity(test_truth, test.trending), test_truth), None))
    for name, grid in grids.items():
        best = None
        for params in grid:
            s = score(val.implicit(makers[name](**params), val_truth), val_truth)
            print(f"  validation {name} {params}: hit rate {s[0]:.4f}, recall {s[1]:.4f}")
            if best is None or s > best[0]:
                best = (s, params)
        started = time.monotonic()
        t = score(test.implicit(makers[name](**best[1]), test_truth), test_truth)
        rows.append((name, best[1], best[0], t, time.monotonic() - started))
    best_val = None
    for path in sorted(glob.glob(ours_val_glob)):
        s = score(read_recs(path), val_truth)
        label = os.path.basename(path)[len("ours_val_"):-len(".csv")]
        print(f"  validation ours {label}: hit rate {s[0]:.4f}, recall {s[1]:.4f}")
        if best_val is None or s > best_val[0]:
            best_val = (s, label)
    rows.append(("ours (unify.recommendations)", os.path.basename(ours_test)[len("ours_test_"):-len(".csv")],
                 best_val[0] if best_val else (float("nan"),) * 2, score(read_recs(ours_test), test_truth), None))
    print()
    print(f"| method | parameters (tuned on validation) | validation hit rate@{N} | validation recall@{N} | test hit rate@{N} | test recall@{N} | fit + recommend (s) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, params, v, t, secs in rows:
        p = ", ".join(f"{k}={x}" for k, x in params.items() if k != "random_state") if isinstance(params, dict) else params
        print(f"| {name} | {p} | {v[0]:.4f} | {v[1]:.4f} | {t[0]:.4f} | {t[1]:.4f} | {'' if secs is None else f'{secs:.1f}'} |")
    return best_val[1] if best_val else None


if __name__ == "__main__":
    if sys.argv[1] == "prep":
        prep(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "evaluate":
        evaluate(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1] == "best":
        # The best validation run of ours: its label (the parameters the test run uses).
        truth = read_truth(sys.argv[2], "val")
        best = max(glob.glob(sys.argv[3]), key=lambda p: score(read_recs(p), truth))
        print(os.path.basename(best)[len("ours_val_"):-len(".csv")])
    else:
        sys.exit(__doc__)
