"""The Markdown helpers of the report sections, against hand-written tables."""
import numpy as np

from relunet.experiments.tables import CLAIM, claims, fmt, spread, table


def test_table_writes_header_rule_and_rows_and_an_empty_corner_cell():
    assert table(("", "a", "b"), [("row", "1", "2")]) == [
        "| | a | b |", "|---|---|---|", "| row | 1 | 2 |"]


def test_claims_table_ends_with_a_blank_line():
    assert claims(("c", "ours", "v"), header=CLAIM) == [
        "| claim | ours | verdict |", "|---|---|---|", "| c | ours | v |", ""]
    assert claims(("c", "o", "v"))[0] == "| claim of the paper | ours | verdict |"


def test_spread_is_median_and_10_90_quantiles_of_the_finite_values():
    v = np.arange(11.0)                  # 0..10: median 5, 10% 1, 90% 9 (linear rule)
    assert spread(v) == "5 [1, 9]"
    assert spread(np.append(v, [np.nan, np.inf])) == "5 [1, 9]"
    assert spread([0.5, 0.5]) == f"{fmt(0.5)} [{fmt(0.5)}, {fmt(0.5)}]" == "0.5 [0.5, 0.5]"
    assert spread([]) == "-" and spread([np.nan], empty="none") == "none"
