"""Builds the UDF jar into the wheel; everything else about the package is in pyproject.toml.

The jar (udfs/java/src, compiled by udfs/java/build.sh) needs `javac` (a JDK 11 or newer) and
PyFlink's jars. The Python that has PyFlink is $MLVIGIL_PYTHON if set, else the one building:
  pip wheel --no-build-isolation .                    (PyFlink installed where pip runs), or
  MLVIGIL_PYTHON=/path/to/venv/bin/python pip wheel .  (an isolated build, PyFlink elsewhere).
Without either the build fails and says so. An editable install (`pip install -e .`,
scripts/setup.sh) builds no jar here: the checkout's udfs/java/mlvigil-udfs.jar is made by
scripts/setup.sh or udfs/java/build.sh.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
JAR_IN_PACKAGE = Path("mlvigil", "udfs", "java", "mlvigil-udfs.jar")


class BuildPyWithUdfJar(build_py):
    """build_py, plus mlvigil/udfs/java/mlvigil-udfs.jar compiled into the build directory."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            build_udf_jar(Path(self.build_lib) / JAR_IN_PACKAGE)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        return outputs if self.editable_mode else [*outputs, str(Path(self.build_lib) / JAR_IN_PACKAGE)]


def build_udf_jar(out: Path) -> None:
    if shutil.which("javac") is None or shutil.which("jar") is None:
        sys.exit(
            "mlvigil: building the UDF jar needs javac and jar (a JDK 11 or newer, e.g. "
            "apt-get install openjdk-17-jdk-headless); none on PATH"
        )
    python = os.environ.get("MLVIGIL_PYTHON", sys.executable)
    env = dict(os.environ, MLVIGIL_PYTHON=python)
    if "MLVIGIL_PYTHON" in os.environ:
        # pip's isolated build sets PYTHONPATH to hide every site-packages: not from that Python's own.
        env.pop("PYTHONPATH", None)
    has_pyflink = subprocess.run([python, "-c", "import pyflink"], env=env, capture_output=True).returncode == 0
    if not has_pyflink:
        sys.exit(
            f"mlvigil: building the UDF jar needs PyFlink's jars, and {python} has no pyflink. Build with "
            "`pip wheel --no-build-isolation .` where apache-flink is installed, or set MLVIGIL_PYTHON to a "
            "Python that has it"
        )
    subprocess.run(
        ["bash", str(HERE / "udfs" / "java" / "build.sh"), str(out.resolve())],
        env=env,
        check=True,
    )


setup(cmdclass={"build_py": BuildPyWithUdfJar})
