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
