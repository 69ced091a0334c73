"""Files shipped inside the mlvigil package: the job (jobs/), its SQL (sql/), the log4j files
(conf/) and the UDF jar (udfs/java/mlvigil-udfs.jar).

In the repository they stay at the top level (the design card's layout); mlvigil/jobs,
mlvigil/sql, mlvigil/conf and mlvigil/udfs are symlinks to them, and the wheel carries copies
(pyproject.toml's package-data, setup.py for the jar). So the package reads them one way, through
importlib.resources, whether it runs from a checkout, an editable install or the wheel.
"""

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

PACKAGE: Traversable = files("mlvigil")
FLINK_SQL: Traversable = PACKAGE / "sql" / "flink"
CLICKHOUSE_SQL: Traversable = PACKAGE / "sql" / "clickhouse"


def package_file(*parts: str) -> Path:
    """A shipped file as a real path, for what is handed to the JVM or to `flink run` (a jar,
    a log4j file, the job). A package imported from a zip (a Python worker fed by `-pyfs`) has
    none: only the client needs these."""
    found = PACKAGE.joinpath(*parts)
    if not isinstance(found, Path):
        raise FileNotFoundError(f"mlvigil/{'/'.join(parts)}: the package at {PACKAGE} is not a directory")
    return found


def job_file() -> Path:
    """The monitor job's Python file: what `flink run -py` submits (`mlvigil path job`)."""
    return package_file("jobs", "monitor.py")
