"""The docs say what the code does."""

from __future__ import annotations

from pathlib import Path

from s3q.config import SETTINGS, settings_table

ROOT = Path(__file__).resolve().parents[2]


def test_config_doc_lists_every_setting_as_generated() -> None:
    doc = (ROOT / "docs" / "CONFIG.md").read_text()
    assert settings_table() in doc, "docs/CONFIG.md is stale: run scripts/gen-docs"
    for s in SETTINGS:
        assert f"`{s.env_var}`" in doc


def test_protocol_doc_names_every_step_the_code_labels() -> None:
    code = (ROOT / "src" / "s3q" / "queue.py").read_text()
    doc = (ROOT / "docs" / "PROTOCOL.md").read_text()
    for step in ("c1", "c1'", "c2", "c3", "t1", "t2", "w5", "r1", "d2", "x2"):
        assert f"# {step}" in code or f"({step})" in code or f"{step}:" in code, step
        assert f"**{step}**" in doc, step


def test_every_relative_link_of_the_docs_stays_in_the_repository() -> None:
    """A clone has no ../shared/: the README and docs/ link only to files in the repo."""
    import re

    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)", doc.read_text()):
            if "://" in target:
                continue
            path = (doc.parent / target).resolve()
            assert path.is_relative_to(ROOT) and path.exists(), f"{doc.name}: {target}"


def test_the_readme_says_how_to_get_s3q_on_path_and_how_long_the_tests_take() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "source .venv/bin/activate" in readme
    assert "6\N{EN DASH}10 minutes on 2 cores" in " ".join(readme.split())
    assert "scripts/demo" in readme and "scripts/test" in readme
