"""The pure parts of bench/product_bench.py: the test disk's layout, the scattered
write's offsets and the summary's ratios against the goals of issue #11."""
from __future__ import annotations

import pytest

from bench.product_bench import GOALS, data_regions, scattered_offsets, summary

MiB, GiB = 1 << 20, 1 << 30


def test_the_disk_holds_the_asked_data_in_regions_with_holes_between():
    regions = data_regions(4 * GiB, 1280)
    assert sum(n for _, _, _, n in regions) == 1280
    assert {k for _, k, _, _ in regions} == {"text", "random"}
    ends = [off + n * MiB for off, _, _, n in regions]
    assert all(nxt[0] >= end + 8 * MiB for nxt, end in zip(regions[1:], ends))  # holes
    assert ends[-1] <= 4 * GiB


def test_scattered_offsets_are_distinct_aligned_inside_and_repeatable():
    offs = scattered_offsets(4 * GiB, 200 * MiB)
    assert len(offs) == len(set(offs)) == 200
    assert all(o % MiB == 0 and 0 <= o <= 4 * GiB - MiB for o in offs)
    assert offs == sorted(offs) == scattered_offsets(4 * GiB, 200 * MiB)
    assert offs != scattered_offsets(4 * GiB, 200 * MiB, seed=12)
    with pytest.raises(ValueError):
        scattered_offsets(64 * MiB, 65 * MiB)


def test_summary_takes_the_best_run_and_judges_each_goal():
    runs = {"full_ovault": [{"wall_s": 40.0}, {"wall_s": 30.0}],
            "full_sdk": [{"wall_s": 80.0}, {"wall_s": 60.0}],
            "incremental_ovault": [{"wall_s": 7.0}], "incremental_sdk": [{"wall_s": 10.0}],
            "restore_ovault": [{"wall_s": 5.0}]}  # no reference run: no row
    s = summary(runs)
    assert set(s) == {"full", "incremental"}
    assert s["full"] == {"ovault_best_s": 30.0, "sdk_best_s": 60.0, "ovault_median_s": 35.0,
                         "sdk_median_s": 70.0, "ratio_best": 0.5, "ratio_median": 0.5, "ratio_first": 0.67,
                         "goal": GOALS["full"], "met": False}
    assert s["incremental"]["ratio_best"] == 0.7 and not s["incremental"]["met"]
    assert summary({"restore_ovault": [{"wall_s": 1.0}], "restore_sdk": [{"wall_s": 2.0}]})["restore"]["met"]
