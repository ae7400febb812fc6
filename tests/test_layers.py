"""The layout's one rule, kept true by the suite: imports point one way, down the data path.

    imap, inbound  ->  pipeline  ->  outgoing  ->  mailgate (the ground)

frontend may use every app; mailgate/asgi.py and mailgate/urls.py (the composition root) name
every app. A function-local import counts like any other. No source file of an app is longer than
600 lines, nor any of its scripts. Test modules do not import each other: what several share
lives in tests/builders.py.
Each failure names the file and line.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BELOW = {
    "mailgate": set(),
    "outgoing": {"mailgate"},
    "pipeline": {"outgoing", "mailgate"},
    "imap": {"pipeline", "outgoing", "mailgate"},
    "inbound": {"pipeline", "outgoing", "mailgate"},
    "frontend": {"imap", "inbound", "pipeline", "outgoing", "mailgate"},
}
COMPOSITION_ROOT = {"mailgate/asgi.py", "mailgate/urls.py"}
MAX_LINES = 600


def app_sources():
    for app in BELOW:
        for path in sorted((ROOT / app).rglob("*.py")):
            if "migrations" not in path.relative_to(ROOT).parts:
                yield app, path


def imported_modules(tree: ast.AST):
    """(line, dotted name) of every absolute import in the module, at any depth."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def wrong_way_imports(app: str, path: Path) -> list[str]:
    relative = path.relative_to(ROOT).as_posix()
    if relative in COMPOSITION_ROOT:
        return []
    allowed = {app, *BELOW[app]}
    wrong = []
    for line, module in imported_modules(ast.parse(path.read_text(), filename=relative)):
        top = module.split(".")[0]
        if top in BELOW and top not in allowed:
            wrong.append(f"{relative}:{line}: {app} imports {module} (an app above it)")
    return wrong


def test_every_import_points_down_the_data_path():
    wrong = [problem for app, path in app_sources() for problem in wrong_way_imports(app, path)]
    assert not wrong, "imports that point up the stack:\n" + "\n".join(wrong)


def test_no_app_source_file_is_over_600_lines():
    long = [f"{path.relative_to(ROOT)}: {n} lines" for _, path in app_sources()
            if (n := len(path.read_text().splitlines())) > MAX_LINES]
    assert not long, "split these along their seams:\n" + "\n".join(long)


def test_no_script_of_an_app_is_over_600_lines():
    # The pages' JavaScript modules are sources too (a 674-line inbox.js was split in three).
    scripts = [path for app in BELOW for path in sorted((ROOT / app).rglob("*.js"))]
    assert scripts, "no scripts found: the check would pass whatever they are"
    long = [f"{path.relative_to(ROOT)}: {n} lines" for path in scripts
            if (n := len(path.read_text().splitlines())) > MAX_LINES]
    assert not long, "split these along their seams:\n" + "\n".join(long)


def test_the_check_itself_catches_a_function_local_import_that_points_up(tmp_path):
    source = tmp_path / "outgoing" / "bad.py"
    source.parent.mkdir()
    source.write_text("import json\n\n\ndef f():\n    from pipeline.models import Message\n")
    global ROOT
    real_root, ROOT = ROOT, tmp_path
    try:
        assert wrong_way_imports("outgoing", source) == [
            "outgoing/bad.py:5: outgoing imports pipeline.models (an app above it)"]
    finally:
        ROOT = real_root


@pytest.mark.parametrize("app", sorted(BELOW))
def test_each_app_of_the_rule_exists(app):
    # A renamed app would make the rule silently pass for it.
    assert (ROOT / app / "__init__.py").exists()


def imports_of_test_modules(relative: str, source: str) -> list[str]:
    """`file:line: ...` for every import, at any depth, of a test module (tests/test_*.py)."""
    here = relative.removesuffix(".py").split("/")[:-1]  # the importing file's package
    found = []
    for node in ast.walk(ast.parse(source, filename=relative)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(here[:len(here) - node.level + 1] if node.level else [])
            module = ".".join(filter(None, [base, node.module]))
            # `from tests import test_x` names the test module in the alias.
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if len(parts) > 1 and parts[0] == "tests" and parts[1].startswith("test_"):
                test_module = ".".join(parts[:2])
                found.append((node.lineno, f"{relative}:{node.lineno}: imports {test_module} (a test module)"))
                break
    return [problem for _, problem in sorted(found)]


def test_no_test_module_imports_another():
    # The check must see every spelling, or it would pass whatever the suite does. (The sample
    # spells the package through a variable so a grep for cross-imports does not find it here.)
    pkg = "tests"
    sample = (f"from {pkg}.test_api import PNG\n"
              f"def f():\n    import {pkg}.test_sync\n    from {pkg} import test_pipeline\n"
              f"    from .test_outgoing import BOT_TOKEN\n    from {pkg}.builders import eml\n")
    assert imports_of_test_modules("tests/test_x.py", sample) == [
        "tests/test_x.py:1: imports tests.test_api (a test module)",
        "tests/test_x.py:3: imports tests.test_sync (a test module)",
        "tests/test_x.py:4: imports tests.test_pipeline (a test module)",
        "tests/test_x.py:5: imports tests.test_outgoing (a test module)"]

    wrong = [problem for path in sorted((ROOT / "tests").rglob("*.py"))
             for problem in imports_of_test_modules(path.relative_to(ROOT).as_posix(), path.read_text())]
    assert not wrong, "import shared helpers from tests.builders instead:\n" + "\n".join(wrong)
