"""Issue 14: sslab installs on every Python the pinned torch trio supports (3.10-3.13), so the package must
not use 3.11+ syntax or standard-library names (CI itself runs 3.11)."""
from __future__ import annotations

import ast
import re

import pytest

# standard-library names added after 3.10 (module -> names; "*" = the module itself)
NEWER_STDLIB = {
    "tomllib": {"*"}, "wsgiref.types": {"*"},
    "typing": {"Self", "Never", "LiteralString", "TypeVarTuple", "Unpack", "NotRequired", "Required",
               "assert_never", "assert_type", "reveal_type", "override", "TypeAliasType", "get_overloads"},
    "datetime": {"UTC"}, "enum": {"StrEnum", "ReprEnum", "verify", "member", "nonmember", "EnumCheck"},
    "asyncio": {"TaskGroup", "timeout", "Runner"}, "itertools": {"batched"}, "contextlib": {"chdir"},
    "hashlib": {"file_digest"}, "math": {"exp2", "cbrt"}, "operator": {"call"},
}
NEWER_BUILTINS = {"ExceptionGroup", "BaseExceptionGroup"}


def _violations(tree: ast.AST) -> list:
    found = []
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if NEWER_STDLIB.get(a.name) == {"*"}:
                    found.append(f"import {a.name}")
                aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module in NEWER_STDLIB:
            names = NEWER_STDLIB[node.module]
            for a in node.names:
                if "*" in names or a.name in names:
                    found.append(f"from {node.module} import {a.name}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            mod = aliases.get(node.value.id, node.value.id)
            if node.attr in NEWER_STDLIB.get(mod, set()):
                found.append(f"{mod}.{node.attr}")
        elif isinstance(node, ast.Name) and node.id in NEWER_BUILTINS:
            found.append(node.id)
    return found


def test_requires_python_admits_3_10_to_3_13(repo_root):
    text = (repo_root / "pyproject.toml").read_text()
    spec = re.search(r'^requires-python\s*=\s*"([^"]+)"', text, re.M).group(1)
    from packaging.specifiers import SpecifierSet

    ok = SpecifierSet(spec)
    assert all(f"3.{m}.0" in ok for m in (10, 11, 12, 13)) and "3.9.18" not in ok and "3.14.0" not in ok


def test_the_checks_catch_3_11_code():
    with pytest.raises(SyntaxError):
        ast.parse("try:\n    pass\nexcept* ValueError:\n    pass\n", feature_version=(3, 10))
    assert _violations(ast.parse("import tomllib\nfrom typing import Self\nimport datetime\nx = datetime.UTC\n"
                                 "raise ExceptionGroup('x', [])\n")) == [
        "import tomllib", "from typing import Self", "datetime.UTC", "ExceptionGroup"]


def test_package_parses_as_python_3_10_and_uses_no_newer_stdlib(repo_root):
    problems = []
    for path in sorted((repo_root / "sslab").rglob("*.py")):
        src = path.read_text(encoding="utf-8")
        try:
            tree = ast.parse(src, filename=str(path), feature_version=(3, 10))
        except SyntaxError as err:
            problems.append(f"{path.relative_to(repo_root)}:{err.lineno}: not Python 3.10 syntax ({err.msg})")
            continue
        problems += [f"{path.relative_to(repo_root)}: {v} (Python 3.11+)" for v in _violations(tree)]
    assert not problems, "\n".join(problems)
