"""Splink 5 (DuckDB) on the records customer_unify matched, in the same run: the same normalized
fields (exported from unify.records), blocking equivalent to customer_unify's rules, Splink's usual
comparisons (address fields scored independently, as Splink users do), unsupervised training as in
Splink's tutorials, predictions at p >= 0.9. Prints wall time per phase, peak RSS and pairwise
precision / recall / F1 against the generator's truth, including family pairs merged.

With --cluster (benches/persons.sh: the end-to-end batch), the predictions are also clustered at
p >= 0.9 (Splink's connected components) and the clusters scored like customer_unify's persons:
record pairs put in one cluster against the true persons.

With --pairs-out FILE, the predicted pairs (record_a < record_b) are written there as CSV, so
benches/matching.sh can count how many of Splink's missed pairs customer_unify finds.

    python benches/splink_compare.py records.csv truth.csv [--cluster] [--pairs-out FILE]
"""

import resource
import sys
import time

import pandas as pd
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on


def main(records_csv: str, truth_csv: str, cluster: bool, pairs_out: str | None) -> None:
    df = pd.read_csv(records_csv, dtype=str, keep_default_na=False, na_values=[""])
    df["unique_id"] = df["record_id"].astype("int64")
    truth = pd.read_csv(truth_csv, dtype={"record_id": "int64", "person_id": "int64", "household_id": "int64"})
    db_api = DuckDBAPI()
    settings = SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="unique_id",
        blocking_rules_to_generate_predictions=[
            block_on("email_key"),
            block_on("phone"),
            block_on("last_name_phonetic", "postcode", "substr(first_name, 1, 1)"),
            block_on("birth_date", "substr(first_name, 1, 1)"),
            block_on("birth_date", "last_name_phonetic"),
            block_on("name_sorted"),
            block_on("birth_date", "postcode"),
            # customer_unify blocks on postcode + house number but skips blocks above 50 records;
            # Splink has no such limit, so the street joins the key to keep blocks house-sized.
            block_on("postcode", "house_number", "street"),
        ],
        comparisons=[
            cl.NameComparison("first_name").configure(term_frequency_adjustments=True),
            cl.NameComparison("last_name").configure(term_frequency_adjustments=True),
            cl.DateOfBirthComparison("birth_date", input_is_string=True),
            cl.EmailComparison("email"),
            cl.ExactMatch("phone"),
            cl.LevenshteinAtThresholds("street", 2),
            cl.ExactMatch("house_number"),
            cl.ExactMatch("postcode"),
            cl.ExactMatch("city").configure(term_frequency_adjustments=True),
        ],
        retain_intermediate_calculation_columns=False,
    )
    t0 = time.time()
    sdf = db_api.register(df)
    linker = Linker(sdf, settings, log_level="WARNING")
    linker.training.estimate_probability_two_random_records_match(
        [block_on("email_key", "first_name"), block_on("first_name", "last_name", "birth_date")], recall=0.7
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=5e6)
    for rule in [block_on("first_name", "last_name"), block_on("birth_date"), block_on("email_key")]:
        linker.training.estimate_parameters_using_expectation_maximisation(rule)
    t1 = time.time()
    pred_sdf = linker.inference.predict(threshold_match_probability=0.9)
    pred = pred_sdf.as_pandas_dataframe()
    t2 = time.time()
    clusters = None
    if cluster:
        clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
            pred_sdf, threshold_match_probability=0.9
        ).as_pandas_dataframe()
    t3 = time.time()
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024

    a = pred["unique_id_l"].to_numpy()
    b = pred["unique_id_r"].to_numpy()
    predicted = {(min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist())}
    if pairs_out:
        pd.DataFrame(sorted(predicted), columns=["record_a", "record_b"]).to_csv(pairs_out, index=False)
    person = dict(zip(truth["record_id"], truth["person_id"]))
    household = dict(zip(truth["record_id"], truth["household_id"]))
    groups = truth.groupby("person_id")["record_id"].apply(sorted)
    true_pairs = set()
    for ids in groups:
        for i, x in enumerate(ids):
            for y in ids[i + 1:]:
                true_pairs.add((x, y))
    tp = len(predicted & true_pairs)
    fp = len(predicted - true_pairs)
    fn = len(true_pairs - predicted)
    family_merged = sum(1 for x, y in predicted if person.get(x) != person.get(y) and household.get(x) == household.get(y))
    family_pairs = 0
    for _, ids in truth.groupby("household_id")["record_id"]:
        ids = list(ids)
        for i, x in enumerate(ids):
            for y in ids[i + 1:]:
                if person[x] != person[y]:
                    family_pairs += 1
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)
    f1 = 2 * tp / max(2 * tp + fp + fn, 1)
    print(f"splink {sys.modules['splink'].__version__}: {len(df)} records")
    print(f"  train {t1 - t0:.1f} s, predict {t2 - t1:.1f} s, total {t2 - t0:.1f} s, peak RSS {peak_gb:.2f} GB")
    print(f"  pairs at p >= 0.9: {len(predicted)}; tp {tp} fp {fp} fn {fn}")
    print(f"  precision {precision:.5f} recall {recall:.5f} F1 {f1:.5f}")
    print(f"  family pairs merged: {family_merged} of {family_pairs} ({family_merged / max(family_pairs, 1):.5f})")
    if clusters is not None:
        # Pairs of records in one cluster, against pairs of records of one true person.
        frame = pd.DataFrame({"record_id": clusters["unique_id"].astype("int64"), "cluster": clusters["cluster_id"]})
        frame["truth"] = frame["record_id"].map(person)
        pairs = lambda sizes: int((sizes * (sizes - 1) // 2).sum())  # noqa: E731
        c_tp = pairs(frame.groupby(["cluster", "truth"]).size())
        c_pred = pairs(frame.groupby("cluster").size())
        c_true = pairs(truth.groupby("person_id").size())  # all records, clustered or not
        print(f"  end to end (load, train, predict, cluster): {t3 - t0:.1f} s, of which clustering {t3 - t2:.1f} s;"
              f" {frame['cluster'].nunique()} clusters")
        print(f"  clusters: tp {c_tp}, predicted pairs {c_pred}, true pairs {c_true}; precision {c_tp / max(c_pred, 1):.5f}"
              f" recall {c_tp / max(c_true, 1):.5f} F1 {2 * c_tp / max(c_pred + c_true, 1):.5f}")


if __name__ == "__main__":
    options = sys.argv[3:]
    out = options[options.index("--pairs-out") + 1] if "--pairs-out" in options else None
    main(sys.argv[1], sys.argv[2], "--cluster" in options, out)
