"""Offline Bicep tooling for the infra tests: tree-sitter parsing and checkov runs."""

from __future__ import annotations

import functools
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tree_sitter_bicep
from tree_sitter import Language, Node, Parser

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
CHECKOV = ROOT / ".venv-infra" / "bin" / "checkov"


@functools.cache
def _parser() -> Parser:
    return Parser(Language(tree_sitter_bicep.language()))


def parse(path: Path) -> Node:
    return _parser().parse(path.read_bytes()).root_node


def walk(node: Node) -> Iterator[Node]:
    yield node
    for child in node.children:
        yield from walk(child)


def syntax_errors(path: Path) -> list[str]:
    """``file:line:col: ...`` for every ERROR or MISSING node of the file."""
    problems = []
    for node in walk(parse(path)):
        if node.is_error or node.is_missing:
            line, column = node.start_point
            what = f"missing {node.type}" if node.is_missing else f"unexpected {node.text.decode()[:40]!r}"
            problems.append(f"{path.relative_to(ROOT)}:{line + 1}:{column + 1}: {what}")
    return problems


def _text(node: Node) -> str:
    """An identifier's name, or a plain string literal's content."""
    if node.type == "string":
        return "".join(c.text.decode() for c in node.children if c.type == "string_content")
    return node.text.decode()


def object_keys(node: Node) -> list[str]:
    return [_text(p.children[0]) for p in node.children if p.type == "object_property"]


def object_property(node: Node, key: str) -> Node | None:
    for prop in node.children:
        if prop.type == "object_property" and _text(prop.children[0]) == key:
            return prop.children[-1]
    return None


def resources(path: Path) -> Iterator[tuple[str, str, Node]]:
    """``(symbolic name, type@version, body object)`` of each resource declaration."""
    for node in walk(parse(path)):
        if node.type == "resource_declaration":
            name = node.children[1].text.decode()
            kind = _text(node.children[2])
            body = next(c for c in walk(node) if c.type == "object")
            yield name, kind, body


def app_settings(path: Path) -> set[str]:
    """The keys of the ``Microsoft.Web/sites/config`` resource named ``appsettings``."""
    for _, kind, body in resources(path):
        name = object_property(body, "name")
        if kind.startswith("Microsoft.Web/sites/config@") and name is not None and _text(name) == "appsettings":
            properties = object_property(body, "properties")
            assert properties is not None
            return set(object_keys(properties))
    raise AssertionError(f"no appsettings resource in {path}")


def run_checkov(*targets: Path, checks: list[str] | None = None) -> dict[str, Any]:
    """Run checkov offline on ``targets`` with our custom policies; return the Bicep report."""
    command = [
        str(CHECKOV),
        "--framework",
        "bicep",
        "--skip-download",
        "--compact",
        "--output",
        "json",
        "--external-checks-dir",
        str(INFRA / "checks"),
    ]
    for target in targets:
        command += ["--directory" if target.is_dir() else "--file", str(target)]
    if checks:
        command += ["--check", ",".join(checks)]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "WARNING"}
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert completed.returncode in (0, 1), completed.stderr[-2000:]  # 1 = failed checks, reported below
    assert "Cannot load external check" not in completed.stderr, completed.stderr[-2000:]
    report = json.loads(completed.stdout)
    reports = report if isinstance(report, list) else [report]
    bicep = [r for r in reports if r.get("check_type") == "bicep"]
    assert bicep, f"checkov produced no Bicep report: {completed.stdout[:500]}"
    return bicep[0]
