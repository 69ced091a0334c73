"""WindowStatsFunction called directly (py4j): its counts against independent numpy/bisect/scipy
references, its JSON against schemas/window_stats.v1.json, and merge of partial accumulators equal to
one accumulator over all their input (the segment cap included).

The input is real: events go through mlv_parse (ParseEventFunction.Parser) and its packed columns into
accumulate, as in the job. The reference reads the events' JSON values, not the packed bytes.
"""

import bisect
import json
import math
import random
from pathlib import Path

import numpy as np
import orjson
import pytest
from jsonschema import Draft202012Validator
from py4j.java_gateway import get_field
from scipy.stats import ks_2samp

from mlvigil.categories import category_text
from mlvigil.finalize import column_metrics
from tests.java_gateway import (
    MAX_SEGMENT_VALUES,
    SHOP_CUSTOM_EDGES,
    contract_training,
    feature_event,
    now_ms,
    prediction_event,
    row_dict,
)

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "window_stats.v1.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA)
REGIONS = ["eu", "us", "apac", "latam", "mena", "日本"]  # more than MAX_SEGMENT_VALUES: the cap is reached


def shop_profile(contract) -> dict:
    return contract.catalog["profiles"][contract.catalog["models"]["shop"]["versions"]["v1"]]


def edge_values(col: dict) -> list[float]:
    """Values on and next to every edge and KS point, and the zeros."""
    out = [0.0, -0.0]
    for e in col["edges"] + col["ks_points"][::7]:
        out += [e, math.nextafter(e, -math.inf), math.nextafter(e, math.inf)]
    return out


def shop_events(contract, n: int, seed: int, regions: list[str]) -> list[tuple[str, dict]]:
    """(stream, event): shop features and predictions with values on edges, ties, zeros, missing ones."""
    rng = random.Random(seed)
    cols = {c["name"]: c for c in shop_profile(contract)["features"] + shop_profile(contract)["prediction"]}
    x_pool, y_pool, s_pool = edge_values(cols["x"]), edge_values(cols["y"]), edge_values(cols["score"])
    devices = ["ios", "android", "web", 3, 3.0, 2.5, True, False, 1e-4, 1e23, "tablet", 7]
    out = []
    for i in range(n):
        segs = {"region": rng.choice(regions)}
        if rng.random() < 0.8:
            segs["tier"] = rng.choice(["gold", "free"])
        feats = {
            "x": rng.choice(x_pool) if rng.random() < 0.6 else round(rng.gauss(0, 1.5), 1),
            "y": rng.choice(y_pool) if rng.random() < 0.5 else rng.uniform(-3, 5),
            "device": rng.choice(devices),
        }
        for name in list(feats):
            if rng.random() < 0.1:
                del feats[name]  # missing
            elif rng.random() < 0.05:
                feats[name] = None  # null: missing too
        out.append(("features", feature_event(request_id=f"r{i}", segments=segs, features=feats)))
        pred = prediction_event(request_id=f"r{i}", segments=segs, score=rng.choice(s_pool + [rng.random()]))
        pred["predicted_label"] = rng.choice([0, 1, "1", 1.0, 2])
        if rng.random() < 0.1:
            del pred["score"]
        out.append(("predictions", pred))
    return out


def packed_of(contract, events: list[tuple[str, dict]]) -> dict[str, list[tuple[dict, bytes]]]:
    now = now_ms()
    by_stream: dict[str, list] = {"features": [], "predictions": []}
    for stream, e in events:
        row = row_dict(contract.java.parse(orjson.dumps(e), stream, now))
        assert row["ok"], (e, row)
        by_stream[stream].append((e, bytes(row["packed"])))
    return by_stream


def run(fn, packed: list[bytes]):
    acc = fn.createAccumulator()
    for p in packed:
        fn.accumulate(acc, p)
    return acc


# --- an independent reference ---------------------------------------------------------------------


def segment_keys(events: list[dict], dims: list[str], cap: int) -> list[list[str]]:
    """The segment keys of each event: "*", then per dimension its value, "(missing)", or "(other)" once
    `cap` distinct values of that dimension came first."""
    seen: dict[str, list[str]] = {d: [] for d in dims}
    out = []
    for e in events:
        keys = ["*"]
        for d in dims:
            v = (e.get("segments") or {}).get(d)
            value = "(missing)" if v is None else category_text(v)
            if value not in seen[d]:
                if len(seen[d]) >= cap:
                    value = "(other)"
                else:
                    seen[d].append(value)
            keys.append(f"{d}={value}")
        out.append(keys)
    return out


def column_value(event: dict, stream: str, name: str):
    if stream == "features":
        return event["features"].get(name)
    return event.get("score") if name == "score" else event.get("predicted_label")


def reference_column(col: dict, values: list) -> dict:
    present = [v for v in values if v is not None]
    if col["type"] != "numeric":
        cats = [0] * (len(col["categories"]) + 1)
        index = {c: i for i, c in enumerate(col["categories"])}
        for v in present:
            cats[index.get(category_text(v), len(index))] += 1
        return {"present": len(present), "missing": len(values) - len(present), "cats": cats}
    x = np.array(present, dtype=np.float64) + 0.0
    edges, points = col["edges"], np.asarray(col["ks_points"])
    bins = np.bincount([bisect.bisect_right(edges, v) for v in x], minlength=len(edges) + 1)
    # numpy's histogram, another way to the same bins ([a, b) but the last closed, at +inf here)
    assert bins.tolist() == np.histogram(x, np.concatenate([[-np.inf], edges, [np.inf]]))[0].tolist()
    hit = np.isin(x, points)
    if col["std"] > 0:
        outliers = int(np.sum(np.abs(x - col["mean"]) > 3 * col["std"]))
    else:
        outliers = int(np.sum(x != col["mean"]))
    return {
        "present": int(x.size),
        "missing": len(values) - int(x.size),
        "outliers": outliers,
        "mean": float(np.mean(x)) if x.size else 0.0,
        "m2": float(np.var(x) * x.size) if x.size else 0.0,
        "bins": bins.tolist(),
        "ks_lt": np.bincount(np.searchsorted(points, x[~hit], side="left"), minlength=points.size + 1).tolist(),
        "ks_eq": np.bincount(np.searchsorted(points, x[hit], side="left"), minlength=points.size).tolist(),
    }


def reference_stats(contract, stream: str, events: list[dict], keys: list[list[str]] | None = None) -> dict:
    """The stats of the events, each counted in its segment keys (default: one accumulator's keys)."""
    profile = shop_profile(contract)
    columns = profile["features"] if stream == "features" else profile["prediction"]
    if keys is None:
        keys = segment_keys(events, contract.catalog["models"]["shop"]["segments"], MAX_SEGMENT_VALUES)
    segments: dict[str, list[dict]] = {}
    for e, ks in zip(events, keys, strict=True):
        for k in ks:
            segments.setdefault(k, []).append(e)
    return {
        "profile": contract.catalog["models"]["shop"]["versions"]["v1"],
        "events": len(events),
        "segments": {
            k: {
                "events": len(evs),
                "columns": [reference_column(c, [column_value(e, stream, c["name"]) for e in evs]) for c in columns],
            }
            for k, evs in segments.items()
        },
    }


def merged_keys(parts_keys: list[list[list[str]]], cap: int) -> list[list[list[str]]]:
    """Each event's keys after merging the parts in order: a part's key keeps its name when the merged
    result has it or its dimension has fewer than cap values, else it becomes dim=(other). A part that
    capped already keeps its (other): which values those events had is gone."""
    names: list[str] = []
    renamed: list[dict[str, str]] = []
    for keys in parts_keys:
        mapping: dict[str, str] = {}
        for key in dict.fromkeys(k for ks in keys for k in ks):  # first-appearance order
            if key == "*" or key in names:
                mapping[key] = key
                continue
            dim = key.split("=", 1)[0]
            name = key if sum(n.startswith(dim + "=") for n in names) < cap else f"{dim}=(other)"
            if name not in names:
                names.append(name)
            mapping[key] = name
        renamed.append(mapping)
    return [[[m[k] for k in ks] for ks in keys] for keys, m in zip(parts_keys, renamed, strict=True)]


def by_segment(stats: dict) -> dict:
    return {
        **stats,
        "segments": {s["segment"]: {k: v for k, v in s.items() if k != "segment"} for s in stats["segments"]},
    }


def assert_same(a, b, path="", rel=1e-12):
    """Equal, integers exactly, floats within rel (Welford's running sums round differently)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f"{path}: {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}", rel)
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]", rel)
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=rel, abs_tol=rel), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a} != {b}"


# --- tests ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shop(contract):
    """Six regions: the cap is reached."""
    return packed_of(contract, shop_events(contract, 200, seed=5, regions=REGIONS))


@pytest.fixture(scope="module")
def shop_under_cap(contract):
    """As many regions as the cap: every value keeps its segment."""
    return packed_of(contract, shop_events(contract, 150, seed=6, regions=REGIONS[:MAX_SEGMENT_VALUES]))


def random_parts(rng: random.Random, items: list) -> list[list]:
    """Each item to a random part of 2 to 5, order kept within a part."""
    parts: list[list] = [[] for _ in range(rng.randint(2, 5))]
    for item in items:
        parts[rng.randrange(len(parts))].append(item)
    return parts


def test_bin_of_at_the_edges_is_bisect_right(contract):
    """MonitorCatalog.binOf over each column's edges (as Java decoded them) is Python's bisect_right,
    on every edge, next to it, at the zeros and at +-inf and NaN (NaN and inf never pass the decoder)."""
    udf = contract.java.udf
    for p in range(len(contract.catalog["profiles"])):
        java_profile = get_field(contract.java.catalog, "profiles").get(p)
        for i, col in enumerate(c for c in contract.catalog["profiles"][p]["features"] if c["type"] == "numeric"):
            java_col = [c for c in get_field(java_profile, "features") if get_field(c, "type") == 1][i]
            edges = list(get_field(java_col, "edges"))
            assert edges == col["edges"]
            assert all(a < b for a, b in zip(edges, edges[1:], strict=False)), "edges reach Java unique and ascending"
            assert all(math.copysign(1.0, e) > 0 or e != 0 for e in edges), "no -0.0 edge"
            values = edge_values(col) + [math.inf, -math.inf, math.nan, 1e100, -1e100]
            for v in values:
                if v == 0:
                    v += 0.0  # the decoder folds -0.0 (test_java_decoder checks the packed value)
                assert udf.MonitorCatalog.binOf(get_field(java_col, "edges"), v) == bisect.bisect_right(edges, v), (
                    edges,
                    v,
                )


def test_repeated_and_signed_zero_edges_become_unique(contract):
    y = next(c for c in shop_profile(contract)["features"] if c["name"] == "y")
    assert y["edges"] == sorted({e + 0.0 for e in SHOP_CUSTOM_EDGES}) == [-1.0, 0.0, 1.0, 2.5]
    x = next(c for c in shop_profile(contract)["features"] if c["name"] == "x")
    train = np.asarray(contract_training()["shop"]["x"]) + 0.0
    quantiles = np.quantile(train, np.arange(1, 10) / 10)
    assert len(set(quantiles.tolist())) < len(quantiles), "the training data has tied quantiles"
    assert x["edges"] == sorted(set(quantiles.tolist()))


@pytest.mark.parametrize("stream", ["features", "predictions"])
def test_window_stats_against_numpy(contract, shop, stream):
    fn = contract.java.opened("WindowStatsFunction")
    got = json.loads(fn.getValue(run(fn, [p for _, p in shop[stream]])))
    VALIDATOR.validate(got)
    want = reference_stats(contract, stream, [e for e, _ in shop[stream]])
    assert_same(by_segment(got), want)
    # The segment cap: at most MAX_SEGMENT_VALUES regions, then region=(other)
    regions = [s["segment"] for s in got["segments"] if s["segment"].startswith("region=")]
    assert len(regions) == MAX_SEGMENT_VALUES + 1 and "region=(other)" in regions


def test_ks_from_the_java_cells_is_scipy_ks_2samp(contract, shop):
    """finalize's KS from the Java cells equals scipy's two-sample KS between the window's values and the
    reference's Q + 1 quantile points (the convention of mlvigil.stattests.ks)."""
    fn = contract.java.opened("WindowStatsFunction")
    got = json.loads(fn.getValue(run(fn, [p for _, p in shop["features"]])))
    profile = shop_profile(contract)
    overall = next(s for s in got["segments"] if s["segment"] == "*")
    train = contract_training()["shop"]
    checked = 0
    for col, stats in zip(profile["features"], overall["columns"], strict=True):
        if col["type"] != "numeric":
            continue
        window = [e["features"][col["name"]] for e, _ in shop["features"] if e["features"].get(col["name"]) is not None]
        points = np.quantile(np.asarray(train[col["name"]]) + 0.0, np.linspace(0, 1, col["ks_quantiles"] + 1))
        ks = column_metrics(col, stats, overall["events"])["ks"]
        assert ks == pytest.approx(ks_2samp(np.asarray(window) + 0.0, points).statistic, abs=1e-12)
        checked += 1
    assert checked == 2


@pytest.mark.parametrize("seed", [1, 2])
def test_merge_of_partial_accumulators_is_one_accumulator_over_all_input(contract, shop_under_cap, seed):
    """Random splits, no segment cap reached: merging the parts' accumulators (into the first, or into an
    empty one) equals one accumulator over all the input."""
    rng = random.Random(seed)
    fn = contract.java.opened("WindowStatsFunction")
    for stream in ("features", "predictions"):
        packed = [p for _, p in shop_under_cap[stream]]
        single = by_segment(json.loads(fn.getValue(run(fn, packed))))
        parts = random_parts(rng, packed)
        into_first = run(fn, parts[0])
        fn.merge(into_first, contract.java.list_of([run(fn, part) for part in parts[1:]]))
        merged = json.loads(fn.getValue(into_first))
        VALIDATOR.validate(merged)
        assert_same(by_segment(merged), single, rel=1e-9)
        empty = fn.createAccumulator()
        fn.merge(empty, contract.java.list_of([fn.createAccumulator()] + [run(fn, part) for part in parts]))
        assert_same(by_segment(json.loads(fn.getValue(empty))), single, rel=1e-9)


@pytest.mark.parametrize("seed", [1, 2])
def test_merge_keeps_the_segment_cap(contract, shop, seed):
    """Random splits with more region values than the cap: the merged accumulator has at most the cap's
    values per dimension plus (other), loses no event, and each segment holds exactly the events the
    reference merge (merged_keys) gives it; "*" equals one accumulator over all the input."""
    rng = random.Random(seed)
    fn = contract.java.opened("WindowStatsFunction")
    dims = contract.catalog["models"]["shop"]["segments"]
    for stream in ("features", "predictions"):
        parts = random_parts(rng, shop[stream])
        accs = [run(fn, [p for _, p in part]) for part in parts]
        regions = {
            s["segment"] for a in accs for s in json.loads(fn.getValue(a))["segments"] if "region=" in s["segment"]
        }
        assert len(regions) > MAX_SEGMENT_VALUES + 1, "the parts together know more regions than the cap"
        fn.merge(accs[0], contract.java.list_of(accs[1:]))
        merged = json.loads(fn.getValue(accs[0]))
        VALIDATOR.validate(merged)
        for dim in dims:
            keys = [s for s in merged["segments"] if s["segment"].startswith(dim + "=")]
            assert len(keys) <= MAX_SEGMENT_VALUES + 1
            assert sum(s["events"] for s in keys) == merged["events"]
        events = [[e for e, _ in part] for part in parts]
        keys = merged_keys([segment_keys(evs, dims, MAX_SEGMENT_VALUES) for evs in events], MAX_SEGMENT_VALUES)
        want = reference_stats(contract, stream, [e for evs in events for e in evs], [k for ks in keys for k in ks])
        assert_same(by_segment(merged), want, rel=1e-9)
        single = by_segment(json.loads(fn.getValue(run(fn, [p for part in parts for _, p in part]))))
        assert_same(by_segment(merged)["segments"]["*"], single["segments"]["*"], rel=1e-9)


def test_point_index_search_is_arrays_binary_search(contract):
    """WindowStatsFunction.PointIndex (the grid-narrowed search of the PSI bins and KS cells) returns what
    java.util.Arrays.binarySearch returns over the whole array: on every point, next to it, between, outside,
    at both zeros, for clustered, wide, tiny and degenerate point sets."""
    jvm, udf = contract.java.jvm, contract.java.udf
    rng = random.Random(5)
    point_sets = [[1.0], [0.0, 1.0, 2.0], [-1e100, 0.0, 1e-300, 1e100], [-0.0, 0.0, 1e-320, 5e-324]]
    point_sets += [sorted({round(rng.gauss(0, 1), rng.choice([1, 3, 6])) for _ in range(rng.choice([5, 101]))})
                   for _ in range(20)]  # fmt: skip
    point_sets += [
        sorted({rng.expovariate(1.0) ** 6 for _ in range(101)}),
        [float(v) for v in np.linspace(-1e300, 1e300, 50)],
    ]
    for points in point_sets:
        index = udf.WindowStatsFunction.PointIndex(contract.java.double_array(points))
        java_points = contract.java.double_array(points)
        keys = [p + d for p in points for d in (0.0,)] + [
            math.nextafter(p, s) for p in points for s in (-math.inf, math.inf)
        ]
        keys += [rng.uniform(points[0] - 1, points[-1] + 1) for _ in range(50)] + [-1e100, 1e100, 0.0, -0.0]
        for k in keys:
            assert index.search(k) == jvm.java.util.Arrays.binarySearch(java_points, float(k)), (points, k)
