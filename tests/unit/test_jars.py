"""Where the job's jars come from: MLVIGIL_FLINK_JARS, then the user cache (mlvigil fetch-jars),
then a checkout's vendor/flink-jars; a missing jar stops the run with the command that provides it."""

import pytest

from mlvigil import jars
from mlvigil.cli import main


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Three empty candidate folders, in the order they are searched."""
    env, cache, checkout = tmp_path / "env", tmp_path / "cache", tmp_path / "checkout"
    monkeypatch.setenv("MLVIGIL_FLINK_JARS", str(env))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setattr(jars, "CHECKOUT_JARS", checkout)
    return env, cache / "mlvigil" / "flink-jars", checkout


def _fill(folder, names=jars.CONNECTOR_JARS):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"PK")


def test_the_first_folder_holding_both_jars_wins(places):
    env, cache, checkout = places
    _fill(checkout)
    assert jars.connector_jars() == [checkout / j for j in jars.CONNECTOR_JARS]
    _fill(cache)
    assert jars.connector_jars() == [cache / j for j in jars.CONNECTOR_JARS]
    _fill(env, jars.CONNECTOR_JARS[:1])  # half a folder does not count
    assert jars.connector_jars()[0].parent == cache
    _fill(env)
    assert jars.connector_jars() == [env / j for j in jars.CONNECTOR_JARS]
    assert jars.job_jars() == [*jars.connector_jars(), jars.UDF_JAR]


def test_missing_connector_jars_name_the_command_and_every_place_searched(places, capsys):
    with pytest.raises(jars.MissingJarsError) as missing:
        jars.job_jars()
    text = str(missing.value)
    assert "mlvigil fetch-jars" in text and "MLVIGIL_FLINK_JARS" in text
    assert all(str(p) in text for p in places)
    # The commands that need them stop before doing anything, exit 2, with that message.
    assert main(["run", "--config", "/nonexistent.yaml"]) == 2
    assert main(["path", "connector-jars"]) == 2
    err = capsys.readouterr().err
    assert err.count("mlvigil fetch-jars") == 2
