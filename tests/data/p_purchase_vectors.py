# Test vectors for P(at least one purchase in t weeks) (src/segment/models.rs).
import warnings; warnings.filterwarnings("ignore")
import pandas as pd
from lifetimes import BetaGeoFitter, ParetoNBDFitter
pn = ParetoNBDFitter(); pn.params_ = pd.Series(dict(r=0.553, alpha=10.578, s=0.606, beta=11.669))
bg = BetaGeoFitter(); bg.params_ = pd.Series(dict(r=0.243, alpha=4.414, a=0.793, b=2.426))
for x, tx, T in [(2, 30.43, 38.86), (0, 0, 38.86), (10, 38.0, 38.86), (1, 5.0, 60.0)]:
    for t in (4.0, 13.0, 39.0):
        print("pareto", x, tx, T, t, repr(1 - float(pn.conditional_probability_of_n_purchases_up_to_time(0, t, x, tx, T))))
for t in (4.0, 13.0, 39.0):
    print("bgnbd new customer", t, repr(1 - float(bg.probability_of_n_purchases_up_to_time(t, 0))))
