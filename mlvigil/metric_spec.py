"""The metric specification: every metric of the three layers, as data, in one place.

Per layer (the per-minute table the job writes and its hourly and daily rollups), each metric's
name, ClickHouse type, unit, how it pools across windows and where it shows. Derived from it:
the rollup SQL (sql/clickhouse/003_rollups.sql, written by mlvigil.rollups), the column lists
the writer inserts (finalize.FEATURE_COLUMNS, SERVICE_COLUMNS, quality.QUALITY_COLUMNS),
`mlvigil history`'s layers, the alert input's layers (alert_operators.LAYERS) and the report's
pooled expressions. The DDL of 001/002 and the Grafana dashboards are checked against it by
tests/unit/test_metric_spec.py.

Pooling across windows (minute -> hour -> day, and the report and Grafana pooling series rows):

* Sum: counts add up.
* Rate(numerator, denominator): recomputed from the pooled counts (exact).
* WeightedMean(weight): a value over a window's `weight` rows pools as the weight-weighted mean of
  the windows' values: exact for plain means (accuracy, mean, MAE, mean_prediction); close to,
  not equal to, the pooled value for precision, recall and F1 (their confusion counts are not
  stored) and for latency percentiles (a percentile does not pool; the worst window is kept).
* PooledStd, RootMeanSquare: from the pooled first and second moments (exact).
* WindowMean: the plain mean of the windows' values (PSI, KS: a PSI of the pooled bins would need
  the reference profile; the pooled bin_proportions allow it), with Worst (the worst window).
* ArrayWeightedMean: bin proportions pooled by present values (exact).

ECE pools by `calibrated`, not `scored`. quality.calibration computes a window's ECE over its
N = `calibrated` labelled predictions with a score: ECE = sum_b |S_b - P_b| / N (S_b the scores'
sum and P_b the positives in bin b). So the N-weighted mean of the windows' ECE is
sum_w sum_b |S_bw - P_bw| / sum_w N_w: the ECE with each window's bins kept apart (an upper bound
of the ECE of the pooled bins, as |sum_w x_w| <= sum_w |x_w|; equal when every window errs in the
same direction in each bin). `scored` (labelled predictions with a predicted class) is larger when
predictions come with a predicted_label but no score, and would weight windows by predictions
the ECE never saw. Likewise mean_prediction and mean_observed are over the calibrated rows
(classification) or the scored rows (regression): `means_n`.

Adding a metric: add it here (in its table's column order, with its pooling and where it
shows), add the column to 001/002 (tests/unit/test_metric_spec.py fails until the DDL agrees),
count it in its Java accumulator, finish it in finalize.py / quality.py (the test checks the
finishing function writes exactly the spec's columns), test it; then `python -m mlvigil.rollups`
rewrites 003_rollups.sql. History, the alert input and the column lists follow by themselves.
"""

from dataclasses import dataclass

# Where a metric shows (besides its table, and the alert input: every stored metric is a field of
# the rows the alert rules see, in the rules layer `Metric.alert`).
HISTORY = "history"  # `mlvigil history --metric NAME`
REPORT = "report"  # `mlvigil report`
GRAFANA = "grafana"  # a panel of grafana/dashboards

GRANULARITIES = ("minute", "hour", "day")


# ---------------------------------------------------------------- how a metric pools across windows


@dataclass(frozen=True)
class Sum:
    """A count: the windows' values add up."""


@dataclass(frozen=True)
class Rate:
    """numerator / denominator (counts of the same layer), recomputed from the pooled counts.

    base: a rollup column holding the denominator summed over the windows where the rate is
    defined (not NULL), when that is not the whole denominator (outlier_rate is NULL for
    categorical features, ctr when no label reported a click). empty: the value when the
    denominator is 0, as the per-minute finishing function writes it."""

    numerator: str
    denominator: str
    base: str | None = None
    empty: str = "NULL"


@dataclass(frozen=True)
class WeightedMean:
    """A mean over a window's `weight` rows: weight-weighted mean of the windows' values.

    base: rollup column, the weight summed over the windows where the metric is defined; metrics
    over the same rows share it (the first one's NULLs decide). wsum: rollup column, the sum of
    value * weight. exact: the pooled value equals the metric computed over the pooled rows."""

    weight: str
    base: str
    wsum: str
    exact: bool = True


@dataclass(frozen=True)
class PooledStd:
    """Population std from the pooled first and second moments: weight and base of `mean`."""

    mean: str
    sq_wsum: str


@dataclass(frozen=True)
class RootMeanSquare:
    """sqrt of the weighted mean of the squares (RMSE): shares weight and base with `like`."""

    like: str
    sq_wsum: str


@dataclass(frozen=True)
class WindowMean:
    """The plain mean of the windows' values (a statistic that does not pool exactly)."""

    sum: str
    n: str


@dataclass(frozen=True)
class Worst:
    """The largest of the windows' values of metric `of` (kept in rollup column `state`)."""

    of: str
    state: str


@dataclass(frozen=True)
class ArrayWeightedMean:
    """An array (bin proportions) pooled element-wise, weighted by `weight`."""

    weight: str
    base: str
    wsum: str


@dataclass(frozen=True)
class Derived:
    """Not stored per minute: an expression over the minute row, and over the rollup columns."""

    minute: str
    rollup: str


Pool = Sum | Rate | WeightedMean | PooledStd | RootMeanSquare | WindowMean | Worst | ArrayWeightedMean | Derived


@dataclass(frozen=True)
class Metric:
    name: str
    ch_type: str | None  # in the per-minute table; None: only in the series views (derived)
    unit: str  # count, share (0..1), ms, 1/s, score (the model's), value (the feature's), ...
    pool: Pool
    shows: frozenset[str] = frozenset()
    alert: str | None = None  # the rules layer that watches it (stored metrics only)
    feature_type: str | None = None  # defined for this feature type only (NULL for the others)

    @property
    def stored(self) -> bool:
        return self.ch_type is not None


@dataclass(frozen=True)
class Column:
    name: str
    ch_type: str


@dataclass(frozen=True)
class Layer:
    name: str  # history's layer name, prefix of the series views ({name}_series_{granularity})
    table: str  # the per-minute table
    head: tuple[Column, ...]  # window, keys and carried columns, in table order
    keys: tuple[str, ...]  # a series' key (with window_start), the rollups' GROUP BY
    carried: tuple[str, ...]  # attributes of a key (any() in the rollups)
    metrics: tuple[Metric, ...]  # stored ones in table order; derived ones where the series shows them
    tail: tuple[Column, ...]  # version columns
    newest: tuple[str, ...]  # the order that puts a minute's newest row first (as FINAL picks it)
    window_states: tuple[tuple[str, str, str], ...]  # rollup columns of the windows: (name, type, from minutes)

    @property
    def columns(self) -> list[Column]:
        stored = [Column(m.name, m.ch_type) for m in self.metrics if m.ch_type is not None]
        return [*self.head, *stored, *self.tail]

    def metric(self, name: str) -> Metric:
        return next(m for m in self.metrics if m.name == name)


def _m(name, ch_type, unit, pool, shows=(), alert=None, feature_type=None) -> Metric:
    return Metric(name, ch_type, unit, pool, frozenset(shows), alert, feature_type)


H, R, G = HISTORY, REPORT, GRAFANA
_DT = "DateTime64(3, 'UTC')"
_LC = "LowCardinality(String)"
_NF = "Nullable(Float64)"
_MINUTES = ("minutes", "UInt32", "toUInt32(count())")  # windows pooled (a minute row is one)

FEATURE = Layer(
    name="feature",
    table="feature_metrics",
    head=(Column("window_start", _DT), Column("window_end", _DT), Column("model_id", _LC),
          Column("model_version", _LC), Column("segment", _LC), Column("feature", _LC),
          Column("feature_type", _LC)),
    keys=("model_id", "model_version", "segment", "feature"),
    carried=("feature_type",),
    metrics=(
        _m("events", "UInt64", "count", Sum(), (H, G), "data"),
        _m("present", "UInt64", "count", Sum(), (H, G), "data"),
        _m("missing", "UInt64", "count", Sum(), (H, G), "data"),
        _m("missing_rate", "Float64", "share", Rate("missing", "events", empty="0"), (H, R, G), "data"),
        _m("outliers", "UInt64", "count", Sum(), (H, G), "data", "numeric"),
        # NULL for categorical features: pooled over the numeric minutes' present values only
        _m("outlier_rate", _NF, "share", Rate("outliers", "present", base="outlier_base"), (H, R, G), "data",
           "numeric"),
        # a PSI of pooled bins needs the reference profile: the rollups keep the windows' mean and worst
        _m("psi", _NF, "psi", WindowMean("psi_sum", "psi_n"), (H, R, G), "data"),
        _m("psi_max", None, "psi", Worst("psi", "psi_max"), (H, R, G)),
        _m("ks", _NF, "ks", WindowMean("ks_sum", "ks_n"), (H, R, G), "data", "numeric"),
        _m("ks_max", None, "ks", Worst("ks", "ks_max"), (H, R, G), feature_type="numeric"),
        _m("mean", _NF, "value", WeightedMean("present", "moment_base", "mean_wsum"), (H,), "data", "numeric"),
        _m("std", _NF, "value", PooledStd("mean", "sq_wsum"), (H,), "data", "numeric"),
        _m("unseen_rate", _NF, "share", WeightedMean("present", "unseen_base", "unseen_wsum"), (H, R, G), "data",
           "categorical"),
        _m("bin_proportions", "Array(Float64)", "share", ArrayWeightedMean("present", "bin_base", "bin_wsum"),
           (R, G), "data"),
    ),
    tail=(Column("computed_at", _DT),),
    newest=("computed_at",),
    window_states=(_MINUTES,),
)  # fmt: skip

SERVICE = Layer(
    name="service",
    table="service_metrics",
    head=(Column("window_start", _DT), Column("window_end", _DT), Column("model_id", _LC),
          Column("model_version", _LC)),
    keys=("model_id", "model_version"),
    carried=(),
    metrics=(
        _m("requests", "UInt64", "count", Sum(), (H, R, G), "service"),
        _m("errors", "UInt64", "count", Sum(), (H, R, G), "service"),
        _m("error_rate", "Float64", "share", Rate("errors", "requests", empty="0"), (H, R, G), "service"),
        _m("throughput_rps", "Float64", "1/s", Rate("requests", "seconds", empty="0"), (H,), "service"),
        # percentiles do not pool: the request-weighted mean of the windows' percentiles, and the worst window
        _m("latency_p50", _NF, "ms", WeightedMean("requests", "latency_base", "p50_wsum", exact=False), (H,),
           "service"),
        _m("latency_p95", _NF, "ms", WeightedMean("requests", "latency_base", "p95_wsum", exact=False), (H, R, G),
           "service"),
        _m("latency_p99", _NF, "ms", WeightedMean("requests", "latency_base", "p99_wsum", exact=False), (H, R, G),
           "service"),
        _m("latency_p95_max", None, "ms", Worst("latency_p95", "p95_max"), (H,)),
        _m("latency_p99_max", None, "ms", Worst("latency_p99", "p99_max"), (H,)),
        _m("score_psi", _NF, "psi", WindowMean("score_psi_sum", "score_psi_n"), (H, G), "service"),
        _m("score_psi_max", None, "psi", Worst("score_psi", "score_psi_max"), (H,)),
        _m("score_mean", _NF, "score", WeightedMean("requests", "score_base", "score_mean_wsum"), (H,), "service"),
    ),
    tail=(Column("computed_at", _DT),),
    newest=("computed_at",),
    window_states=(_MINUTES, ("seconds", "Float64", "sum(dateDiff('millisecond', minute, m_window_end) / 1000)")),
)  # fmt: skip

_MEANS = "if(task = 'regression', scored, calibrated)"  # the rows mean_prediction/mean_observed are over
QUALITY = Layer(
    name="quality",
    table="quality_metrics",
    head=(Column("window_start", _DT), Column("window_end", _DT), Column("model_id", _LC),
          Column("model_version", _LC), Column("segment", _LC), Column("task", _LC)),
    keys=("model_id", "model_version", "segment"),
    carried=("task",),
    metrics=(
        _m("predictions", "UInt64", "count", Sum(), (H, R, G), "model"),
        _m("labelled", "UInt64", "count", Sum(), (H, R, G), "model"),
        _m("label_coverage", _NF, "share", Rate("labelled", "predictions"), (H, R, G), "model"),
        _m("scored", "UInt64", "count", Sum(), (H, R, G), "model"),
        _m("accuracy", _NF, "share", WeightedMean("scored", "acc_base", "acc_wsum"), (H, R, G), "model"),
        # the confusion counts are not stored: close to, not equal to, the pooled window's value
        _m("precision", _NF, "share", WeightedMean("scored", "precision_base", "precision_wsum", exact=False),
           (H, R, G), "model"),
        _m("recall", _NF, "share", WeightedMean("scored", "recall_base", "recall_wsum", exact=False), (H, R, G),
           "model"),
        _m("f1", _NF, "share", WeightedMean("scored", "f1_base", "f1_wsum", exact=False), (H, R, G), "model"),
        # over the calibrated rows (see the module's docstring); per-window bins, not pooled ones
        _m("ece", _NF, "share", WeightedMean("calibrated", "ece_base", "ece_wsum", exact=False), (H, R, G), "model"),
        _m("calibrated", "UInt64", "count", Sum(), (H, R, G), "model"),
        _m("mean_prediction", _NF, "score", WeightedMean("means_n", "means_base", "prediction_wsum"), (H, G),
           "model"),
        _m("mean_observed", _NF, "share", WeightedMean("means_n", "means_base", "observed_wsum"), (H, G), "model"),
        _m("means_n", None, "count", Derived(_MEANS, "means_base"), (G,)),
        _m("mae", _NF, "value", WeightedMean("scored", "err_base", "mae_wsum"), (H,), "model"),
        _m("rmse", _NF, "value", RootMeanSquare("mae", "sq_err_wsum"), (H,), "model"),
        _m("clicks", "UInt64", "count", Sum(), (H, G), "business"),
        _m("conversions", "UInt64", "count", Sum(), (H, G), "business"),
        _m("revenue", "Float64", "currency", Sum(), (H,), "business"),
        _m("ctr", _NF, "share", Rate("clicks", "labelled", base="clicks_base"), (H, R, G), "business"),
        _m("conversion_rate", _NF, "share", Rate("conversions", "labelled", base="conversions_base"), (H, R, G),
           "business"),
        _m("revenue_per_request", _NF, "currency", Rate("revenue", "labelled", base="revenue_base"), (H, G),
           "business"),
    ),
    tail=(Column("updates", "UInt64"), Column("computed_at", _DT)),
    newest=("updates", "computed_at"),
    window_states=(_MINUTES,),
)  # fmt: skip

LAYERS: dict[str, Layer] = {layer.name: layer for layer in (FEATURE, SERVICE, QUALITY)}
BY_TABLE: dict[str, Layer] = {layer.table: layer for layer in LAYERS.values()}


# ---------------------------------------------------------------- derived lists


def column_names(table: str) -> list[str]:
    """The per-minute table's columns in DDL order: the writer's insert order."""
    return [c.name for c in BY_TABLE[table].columns]


def alert_layers(table: str) -> str | list[str]:
    """The rules layers of a table's rows: one name, or a list when its metrics span several."""
    names = list(dict.fromkeys(m.alert for m in BY_TABLE[table].metrics if m.alert))
    return names[0] if len(names) == 1 else names


def shown_in(where: str, layer: str) -> tuple[str, ...]:
    return tuple(m.name for m in LAYERS[layer].metrics if where in m.shows)


def series_columns(layer: str) -> list[str]:
    """The columns of {layer}_series_{minute,hour,day}, in order."""
    lay = LAYERS[layer]
    return ["window_start", *lay.keys, *lay.carried, "minutes", *(m.name for m in lay.metrics)]


def find(name: str, layer: str | None = None) -> Metric:
    """The metric called name (in the given layer, else in the one that has it)."""
    for lay in [LAYERS[layer]] if layer else LAYERS.values():
        for m in lay.metrics:
            if m.name == name:
                return m
    raise KeyError(name)


def repool_weight(m: Metric, layer: str) -> str | None:
    """The series column that weights this metric when series rows are pooled further (a report
    or a Grafana panel over several hours): its count, or minutes for per-window statistics."""
    p = m.pool
    if isinstance(p, WeightedMean | ArrayWeightedMean):
        return p.weight
    if isinstance(p, PooledStd | RootMeanSquare):
        return repool_weight(find(p.mean if isinstance(p, PooledStd) else p.like, layer), layer)
    if isinstance(p, WindowMean):
        return "minutes"
    if isinstance(p, Rate):
        return p.denominator
    return None


def weighted_mean_sql(x: str, w: str) -> str:
    """The w-weighted mean of column x over the grouped rows, NULL values of x left out."""
    return f"sum({x} * {w}) / nullIf(sum(if({x} IS NULL, 0, {w})), 0)"


def pooled_sql(name: str, layer: str) -> str:
    """An aggregate expression pooling metric `name` over rows of {layer}_series_*, as the rollups
    pool minutes: counts summed, rates from the summed counts, means weighted by their count,
    worst windows by max."""
    m = find(name, layer)
    p = m.pool
    if isinstance(p, Sum):
        return f"sum({name})"
    if isinstance(p, Worst):
        return f"max({name})"
    if isinstance(p, Rate):
        if p.denominator not in series_columns(layer):
            raise ValueError(f"{name}: its denominator {p.denominator} is not a series column")
        if p.base:  # the base is not a series column: the rates weighted by their denominator
            return weighted_mean_sql(name, p.denominator)
        return f"sum({p.numerator}) / nullIf(sum({p.denominator}), 0)"
    if isinstance(p, WeightedMean | WindowMean):
        return weighted_mean_sql(name, repool_weight(m, layer))
    raise ValueError(f"{name} ({type(p).__name__}) has no pooled expression over series rows")
