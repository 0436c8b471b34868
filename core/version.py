"""The version of this code, as pyproject.toml gives it: nodes of one site must all run the same."""

import tomllib
from pathlib import Path

VERSION: str = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["version"]
