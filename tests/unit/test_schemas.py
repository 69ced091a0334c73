"""Event contracts: the schemas are valid, the README's examples and synthetic traffic satisfy
them, and events the decoder dead-letters do not."""

import copy
import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from mlvigil.profile import build_profile, fingerprint
from mlvigil.synth import traffic, training_columns

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
SCHEMA_FILES = sorted(p.name for p in SCHEMAS.glob("*.v*.json"))
EVENT_SCHEMAS = ["feature_event.v1.json", "prediction_event.v1.json", "label_event.v1.json"]


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads((SCHEMAS / name).read_text()))


def is_valid(name: str, doc) -> bool:
    return validator(name).is_valid(doc)


def readme_examples() -> list[tuple[str, dict]]:
    """(schema file, example) for every ```json block of schemas/README.md, by its section."""
    text = (SCHEMAS / "README.md").read_text()
    out = []
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        heading = section.splitlines()[0]
        blocks = re.findall(r"```json\n(.*?)```", section, flags=re.S)
        named = re.search(r"[\w]+\.v\d+\.json", heading)
        assert named or not blocks, f"JSON example under '## {heading}', which names no schema"
        out += [(named.group(0), json.loads(b)) for b in blocks]
    return out


def test_schema_files_exist():
    assert SCHEMA_FILES == sorted(
        EVENT_SCHEMAS + ["reference_profile.v1.json", "window_stats.v1.json", "quality_stats.v1.json"]
    )


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_schemas_are_valid_draft_2020_12(name):
    schema = json.loads((SCHEMAS / name).read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_every_schema_has_a_readme_example():
    assert sorted({name for name, _ in readme_examples()}) == SCHEMA_FILES


@pytest.mark.parametrize(("name", "example"), readme_examples(), ids=lambda v: v if isinstance(v, str) else "")
def test_readme_examples_validate(name, example):
    errors = [e.message for e in validator(name).iter_errors(example)]
    assert errors == []


def test_readme_profile_example_is_genuine():
    (profile,) = [ex for name, ex in readme_examples() if name == "reference_profile.v1.json"]
    assert fingerprint(profile) == profile["fingerprint"]


def test_event_time_rule_is_the_same_everywhere():
    rules = [json.loads((SCHEMAS / n).read_text())["$defs"]["event_time"]["oneOf"] for n in EVENT_SCHEMAS]
    assert rules[0] == rules[1] == rules[2]


def test_synthetic_traffic_validates():
    t = traffic(start_ms=1_714_564_800_000, minutes=3, per_minute=200, drift_minute=1)
    assert len(t.features) == len(t.predictions) == 3 * 2 * 200
    features, predictions = validator("feature_event.v1.json"), validator("prediction_event.v1.json")
    for e in t.features:
        assert not list(features.iter_errors(e)), e
    for e in t.predictions:
        assert not list(predictions.iter_errors(e)), e
    assert any(e["status"] == "error" for e in t.predictions)  # errors are covered too


@pytest.mark.parametrize("model", ["recsys", "fraud"])
def test_built_profiles_validate(model):
    profile = build_profile(training_columns(model, 2000), model, "v1", importance={"age": 0.4})
    errors = [e.message for e in validator("reference_profile.v1.json").iter_errors(profile)]
    assert errors == []
    # The schemas describe different things.
    assert not is_valid("feature_event.v1.json", profile)


FEATURE = {
    "request_id": "r-1",
    "model_id": "recsys",
    "model_version": "v1",
    "event_time": 1_714_564_800_000,
    "segments": {"region": "eu"},
    "features": {"age": 34, "device": "ios", "premium": True, "income": None},
}
PREDICTION = {
    "request_id": "r-1",
    "model_id": "recsys",
    "model_version": "v1",
    "event_time": "2024-05-01T12:00:00Z",
    "score": 0.3,
    "probabilities": [0.3, 0.7],
    "predicted_label": "no_click",
    "latency_ms": 0,
    "status": "error",
    "error_code": "TIMEOUT",
}
LABEL = {"request_id": "r-1", "model_id": "recsys", "event_time": 1_714_565_000_000, "label": True,
         "outcomes": {"clicked": True, "converted": False, "revenue": 12.5}}  # fmt: skip


REMOVE = object()


def with_change(event: dict, path: str, value) -> dict:
    """A copy of event with path ("a.b") set to value, or removed when value is REMOVE."""
    out = copy.deepcopy(event)
    *parents, key = path.split(".")
    target = out
    for p in parents:
        target = target[p]
    if value is REMOVE:
        del target[key]
    else:
        target[key] = value
    return out


def test_base_events_are_valid():
    assert is_valid("feature_event.v1.json", FEATURE)
    assert is_valid("prediction_event.v1.json", PREDICTION)
    assert is_valid("label_event.v1.json", LABEL)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("event_time", "2024-05-01T12:00:00Z"),
        ("event_time", "2024-05-01T12:00:00"),  # no offset: UTC
        ("event_time", "2024-05-01T14:00:00.123456789+02:00"),
        ("event_time", "2024-05-01t12:00z"),
        ("event_time", "2024-05-01T12:00:00+02"),
        ("event_time", 946_684_800_000),  # 2000-01-01T00:00:00Z
        ("segments", REMOVE),
        ("segments.region", 3),
        ("features", {}),
        ("extra_field", {"anything": [1, 2]}),
    ],
)
def test_valid_feature_variants(path, value):
    assert is_valid("feature_event.v1.json", with_change(FEATURE, path, value))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("request_id", REMOVE),
        ("model_id", ""),
        ("model_version", None),
        ("event_time", REMOVE),
        ("event_time", None),
        ("event_time", True),
        ("event_time", 946_684_799_999),  # before 2000
        ("event_time", "yesterday"),
        ("event_time", "2024-05-01"),  # a date alone
        ("event_time", "2024-05-01 12:00:00"),
        ("event_time", "2024-05-01T12:00:00+0200"),
        ("features", REMOVE),
        ("features", None),
        ("features", [1.0, 2.0]),
        ("features.age", {"value": 34}),
        ("features.age", [34]),
        ("segments", "eu"),
        ("segments.region", {"name": "eu"}),
    ],
)
def test_invalid_feature_events(path, value):
    assert not is_valid("feature_event.v1.json", with_change(FEATURE, path, value))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("score", REMOVE),
        ("probabilities", {"click": 0.3, "no_click": 0.7}),
        ("probabilities", [0.0, 1.0]),
        ("predicted_label", 1),
        ("predicted_label", False),
        ("status", "ok"),
        ("status", REMOVE),
        ("latency_ms", 12.25),
    ],
)
def test_valid_prediction_variants(path, value):
    assert is_valid("prediction_event.v1.json", with_change(PREDICTION, path, value))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("model_version", REMOVE),
        ("score", "0.3"),
        ("probabilities", [0.3, 1.2]),
        ("probabilities", {"click": -0.1}),
        ("probabilities", 0.3),
        ("probabilities", ["0.3"]),
        ("predicted_label", {"label": 1}),
        ("latency_ms", -1),
        ("latency_ms", "12ms"),
        ("status", "OK"),
        ("status", "failed"),
        ("error_code", 504),
        ("event_time", "2024-13"),
    ],
)
def test_invalid_prediction_events(path, value):
    assert not is_valid("prediction_event.v1.json", with_change(PREDICTION, path, value))


@pytest.mark.parametrize(
    ("path", "value", "valid"),
    [
        ("outcomes", REMOVE, True),
        ("label", "converted", True),
        ("label", 0, True),
        ("model_version", "v1", True),
        ("label", REMOVE, False),
        ("label", None, False),
        ("label", [1], False),
        ("request_id", REMOVE, False),
        ("outcomes.clicked", "yes", False),
        ("outcomes.revenue", "12.5", False),
        ("event_time", "soon", False),
    ],
)
def test_label_events(path, value, valid):
    assert is_valid("label_event.v1.json", with_change(LABEL, path, value)) is valid


@pytest.fixture(scope="module")
def profile():
    return build_profile(training_columns("recsys", 1000), "recsys", "v1")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("schema", "mlvigil.reference_profile/v2"),
        ("fingerprint", "not-hex"),
        ("features.0.type", "float"),
        ("features.0.ks_cdf", REMOVE),
        ("features.0.expected", [0.5, 1.5]),
        ("features.0.std", -1.0),
        ("features.0.edges", [1.0, 1.0]),
        ("features.0.categories", ["a"]),  # a numeric column has no categories
        ("features.4.categories", [1, 2]),
        ("prediction.0.name", "probability"),
        ("model_version", REMOVE),
    ],
)
def test_invalid_profiles(profile, path, value):
    assert is_valid("reference_profile.v1.json", profile)
    keyed = json.loads(json.dumps(profile))
    *parents, key = path.split(".")
    target = keyed
    for p in parents:
        target = target[int(p)] if p.isdigit() else target[p]
    if value is REMOVE:
        del target[key]
    else:
        target[key] = value
    assert not is_valid("reference_profile.v1.json", keyed)
