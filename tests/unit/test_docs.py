"""The docs say what the code does."""

from __future__ import annotations

import re
from pathlib import Path

from s3q.settings import SETTINGS, settings_table

ROOT = Path(__file__).resolve().parents[2]


def test_config_doc_lists_every_setting_as_generated() -> None:
    doc = (ROOT / "docs" / "CONFIG.md").read_text()
    assert settings_table() in doc, "docs/CONFIG.md is stale: run scripts/gen-docs"
    for s in SETTINGS:
        assert f"`{s.env_var}`" in doc


def test_each_operation_of_the_protocol_is_in_the_module_its_heading_names() -> None:
    """PROTOCOL.md §4: every operation's heading names its module (and function), and every
    step it labels (**c1**, **d3**, …) is carried out there, as a ``# c1`` comment says;
    no other module labels that step."""
    doc = (ROOT / "docs" / "PROTOCOL.md").read_text()
    ops = doc.split("## 4. Operations", 1)[1].split("\n## 5.", 1)[0]
    sections = re.split(r"^### ", ops, flags=re.M)[1:]
    modules = {p.name: p.read_text() for p in (ROOT / "src" / "s3q").glob("*.py")}
    seen: dict[str, str] = {}
    for section in sections:
        heading = section.splitlines()[0]
        found = re.search(r"`(\w+\.py)`: `([\w.]+)`", heading)
        assert found, f"heading names no module: {heading}"
        module, function = found.groups()
        code = modules[module]
        assert re.search(rf"\b(def|class) {function.split('.')[-1]}\b", code), heading
        for step in re.findall(r"\*\*([a-z]\d+[a-z']*)\*\*", section):
            assert re.search(rf"# {re.escape(step)}(?![\w'])", code), f"{step} not in {module}"
            seen[step] = module
    assert len(seen) >= 20, seen
    for step, module in seen.items():
        others = [m for m, code in modules.items()
                  if m != module and re.search(rf"# {re.escape(step)}(?![\w'])", code)]
        assert not others, f"{step} is labelled in {module} and in {others}"


def test_every_relative_link_of_the_docs_stays_in_the_repository() -> None:
    """A clone has no ../shared/: the README and docs/ link only to files in the repo."""
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)", doc.read_text()):
            if "://" in target:
                continue
            path = (doc.parent / target).resolve()
            assert path.is_relative_to(ROOT) and path.exists(), f"{doc.name}: {target}"


def test_the_readme_says_how_to_get_s3q_on_path_and_how_long_the_tests_take() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "source .venv/bin/activate" in readme
    assert "20\N{EN DASH}25 minutes on 2 cores" in " ".join(readme.split())
    assert "scripts/demo" in readme and "scripts/test" in readme
