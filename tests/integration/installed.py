"""mlvigil as a user installs it: the wheel built from this checkout (pip's isolated build, the UDF
jar compiled into it), installed non-editable into a fresh venv. Built once per test session and
shared by the tests that need it (test_install, test_cluster).

The fresh venv sees this environment's site-packages through a .pth line (PyFlink is not
downloaded again); .pth files in there are not run, so this environment's editable mlvigil
stays invisible, and nothing runs with PYTHONPATH: the checkout cannot be imported.
"""

import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from ..conftest import ROOT


@dataclass(frozen=True)
class InstalledVenv:
    root: Path
    wheel: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def env(self, **extra: str) -> dict[str, str]:
        """This environment without PYTHONPATH (and no MLVIGIL_* locations), the venv's bin first on PATH."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and k not in ("MLVIGIL_FLINK_JARS",)}
        return {**env, "PATH": f"{self.bin}{os.pathsep}{env.get('PATH', '')}", **extra}

    def run(self, args: list[str], cwd: Path, timeout: float, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=cwd, env=self.env(**env), capture_output=True, text=True, timeout=timeout)


_BUILT: dict[str, InstalledVenv] = {}


def installed_venv(tmp_path_factory) -> InstalledVenv:
    if "venv" in _BUILT:
        return _BUILT["venv"]
    base = tmp_path_factory.mktemp("installed")
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # An isolated build, as `pip wheel .` does it; the UDF jar is compiled against this Python's PyFlink.
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(base / "dist"), str(ROOT)],
        env={**clean, "MLVIGIL_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (base / "dist").glob("mlvigil-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], env=clean, check=True, timeout=300)
    purelib = Path(sysconfig.get_paths()["purelib"])
    (Path(sysconfig.get_paths(vars={"base": str(venv)})["purelib"]) / "shared-site-packages.pth").write_text(
        f"{purelib}\n"
    )
    # --ignore-installed: never uninstall the shared environment's editable mlvigil, which pip can see.
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", str(wheel)],
        env=clean,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    _BUILT["venv"] = InstalledVenv(venv, wheel)
    return _BUILT["venv"]
