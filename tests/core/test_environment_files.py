"""environment.yml (conda) must list exactly the dependencies of pyproject.toml, with the same pins."""
import re
import tomllib

import yaml


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower().replace("_", "-")


def test_environment_yml_matches_pyproject(repo_root):
    deps = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((repo_root / "environment.yml").read_text())
    pip_deps = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert sorted(map(_norm, pip_deps)) == sorted(map(_norm, deps))
    py = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert py == ["python=3.11"]


def test_torch_trio_is_pinned(repo_root):
    deps = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {"torch==2.11.0", "torchvision==0.26.0", "torchaudio==2.11.0"} <= set(deps)
