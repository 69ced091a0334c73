"""mlvigil installed from its wheel into a fresh venv works from any folder: the job, its SQL, the
log4j files and the UDF jar come from the installed package; the Kafka connector jars, which the
wheel does not carry, are reported missing with the command that fetches them, then fetched
(`mlvigil fetch-jars`, through pip) into the user cache; and `mlvigil demo` runs the whole loop:
drift caught, an alert delivered to its webhook, invalid events dead-lettered with their reasons.
"""

import base64
import hashlib
import json
import sys
import time
import zipfile
from pathlib import Path

import pytest

from mlvigil.jars import CONNECTOR_JARS, connector_jars

from ..conftest import ROOT
from .installed import installed_venv

pytestmark = pytest.mark.integration
DEMO = {"minutes": 5, "per_minute": 300, "drift_minute": 2}
DRIFTING = ("age", "browsing_duration")  # what the demo's traffic shifts in recsys (mlvigil/synth.py)


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    t0 = time.monotonic()
    venv = installed_venv(tmp_path_factory)
    print(f"\nwheel built and installed in {time.monotonic() - t0:.1f} s")
    return venv


def connector_index(folder: Path) -> Path:
    """A package index folder holding the connector wheel (its name, version and the two jars it
    is fetched for, taken from this checkout's copy), so the fetch runs through pip offline."""
    name = "shigawire_apache_flink_libraries-2.0.0.post1"
    files = {f"pyflink/lib/{j.name}": j.read_bytes() for j in connector_jars()}
    info = f"{name}.dist-info"
    files[f"{info}/METADATA"] = b"Metadata-Version: 2.1\nName: shigawire-apache-flink-libraries\nVersion: 2.0.0.post1\n"
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"

    def digest(data: bytes) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

    record = "".join(f"{p},sha256={digest(d)},{len(d)}\n" for p, d in files.items()) + f"{info}/RECORD,,\n"
    files[f"{info}/RECORD"] = record.encode()
    folder.mkdir()
    with zipfile.ZipFile(folder / f"{name}-py3-none-any.whl", "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
    return folder


def psi_table(out: str) -> list[tuple[str, dict[str, str]]]:
    """The demo's PSI table: (minute, {feature: cell}) per row, cells as printed ("0.2079*")."""
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("minute  ") and "age" in line)
    features = lines[head].split()[1:]
    rows = []
    for line in lines[head + 1 :]:
        if not line.strip():
            break
        minute, *cells = line.split()
        rows.append((minute, dict(zip(features, cells, strict=True))))
    return rows


def test_wheel_installed_in_a_fresh_venv_runs_the_demo_from_any_folder(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cache = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    mlvigil = str(installed.bin / "mlvigil")

    # The installed package, not the checkout: nothing of the checkout on sys.path.
    probe = installed.run(
        [str(installed.python), "-c", "import json, sys, mlvigil; print(json.dumps([mlvigil.__file__, sys.path]))"],
        elsewhere,
        120,
    )
    assert probe.returncode == 0, probe.stderr
    module, path = json.loads(probe.stdout)
    assert Path(module).is_relative_to(installed.root), module
    # (The shared environment's site-packages, seen through the .pth line, may lie inside the
    # checkout, as .venv does in CI: it holds PyFlink and the rest, not mlvigil's sources.)
    shared = Path(sys.prefix).resolve()
    checkout = [p for p in path if p and Path(p).resolve().is_relative_to(ROOT)]
    assert not [p for p in checkout if not Path(p).resolve().is_relative_to(shared)], path

    # The job and the UDF jar are files of the installed package; the jar was compiled into the
    # wheel from udfs/java/src (one class file per source at least).
    where = {w: installed.run([mlvigil, "path", w], elsewhere, 120) for w in ("job", "udf-jar", "conf")}
    for w, r in where.items():
        assert r.returncode == 0 and Path(r.stdout.strip()).is_relative_to(installed.root), (w, r.stdout, r.stderr)
    with zipfile.ZipFile(where["udf-jar"].stdout.strip()) as jar:
        classes = {Path(n).stem for n in jar.namelist() if n.endswith(".class")}
    sources = {p.stem for p in (ROOT / "udfs" / "java" / "src").rglob("*.java")}
    assert sources and sources <= classes, sources - classes

    # No connector jars yet: both commands stop at once, naming the command that fetches them.
    config = elsewhere / "config.yaml"
    config.write_text("models: {}\n")
    for cmd in ([mlvigil, "run", "--config", str(config)], [mlvigil, "demo", "--workdir", "demo"]):
        r = installed.run(cmd, elsewhere, 120, **cache)
        assert r.returncode == 2, (cmd, r.returncode, r.stdout, r.stderr)
        assert "mlvigil fetch-jars" in r.stderr and "MLVIGIL_FLINK_JARS" in r.stderr, r.stderr
    assert not (elsewhere / "demo").exists()

    # fetch-jars goes through pip (here an offline index folder) into the user cache.
    index = connector_index(tmp_path / "index")
    fetched = installed.run(
        [mlvigil, "fetch-jars"], elsewhere, 300, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(index), **cache
    )
    assert fetched.returncode == 0, fetched.stderr
    cached = tmp_path / "cache" / "mlvigil" / "flink-jars"
    for jar, original in zip(CONNECTOR_JARS, connector_jars(), strict=True):
        assert (cached / jar).read_bytes() == original.read_bytes()

    t0 = time.monotonic()
    demo = installed.run(
        [mlvigil, "demo", "--workdir", "demo", "--minutes", str(DEMO["minutes"]),
         "--per-minute", str(DEMO["per_minute"]), "--drift-minute", str(DEMO["drift_minute"])],
        elsewhere, 900, **cache,
    )  # fmt: skip
    job_log = elsewhere / "demo" / "job.log"
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:] + job_log.read_text()[-3000:]
    out = demo.stdout
    print(f"\nmlvigil demo from the wheel: {time.monotonic() - t0:.1f} s")

    # Drift caught: the drifting features above the PSI threshold from the drift minute on, and
    # nothing above it before.
    rows = psi_table(out)
    assert len(rows) == DEMO["minutes"], out
    for i, (minute, cells) in enumerate(rows):
        starred = {f for f, cell in cells.items() if cell.endswith("*")}
        assert starred == (set(DRIFTING) if i >= DEMO["drift_minute"] else set()), (minute, cells)

    # An alert delivered: the demo's webhook received a notification about recsys' drift.
    chat = [line for line in out.splitlines() if line.startswith("[chat]")]
    assert any("recsys" in line and "drift on" in line for line in chat), chat

    # The invalid events the demo produces, dead-lettered with their reasons.
    dead = out[out.index("dead letters") :]
    for reason in ("malformed_json", "missing_field", "not_an_object", "too_old"):
        assert f"invalid  {reason}" in dead, dead
