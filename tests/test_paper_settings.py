"""The presets against the paper (issue 21): kmtr.paper_settings is the one table; the presets, the
paper's numbers (REFERENCES.md) and the README must all agree with it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from kmtr.config import ArchConfig, OptimConfig, config_from_dict, config_to_dict, preset
from kmtr.paper_settings import NOT_STATED, README_END, README_START, SCOPES, SETTINGS, markdown_table, tiny_value

README = Path(__file__).resolve().parents[1] / "README.md"


def _get(cfg, key: str):
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("scope", list(SCOPES))
def test_presets_equal_the_table_in_every_stage_and_task(scope):
    stage, task = SCOPES[scope]
    for name in ("paper", "tiny"):
        # through config.json as `kmtr train` saves it
        cfg = config_from_dict(config_to_dict(preset(name, stage, task)))
        for row in SETTINGS:
            if scope not in row.scopes:
                continue
            want = row.ours if name == "paper" else tiny_value(row, scope)
            assert _get(cfg, row.key) == want, f"{name} preset, {scope}: {row.key} = {_get(cfg, row.key)!r}, " \
                                               f"table says {want!r}"


def test_the_paper_preset_is_the_paper_wherever_the_paper_states_a_value():
    stated = [row for row in SETTINGS if row.paper is not NOT_STATED]
    assert len(stated) >= 20
    for row in stated:
        assert row.ours == row.paper, f"{row.key} ({', '.join(row.scopes)}): paper {row.paper!r}, preset {row.ours!r}"
    # what makes the method k-MTR: no hand-crafted features, the aligned class token
    for scope in ("III reg", "III cls"):
        for name in ("paper", "tiny"):
            cfg = preset(name, *SCOPES[scope])
            assert cfg.heads.spectrum_rings == 0 and cfg.heads.pool == "cls" and cfg.method == "kmtr"


def test_every_architecture_and_optimiser_setting_is_in_the_table():
    listed = {row.key for row in SETTINGS}
    for section, cls in (("arch", ArchConfig), ("optim", OptimConfig)):
        missing = [f"{section}.{f.name}" for f in dataclasses.fields(cls) if f"{section}.{f.name}" not in listed]
        assert not missing, f"settings missing from kmtr/paper_settings.py: {missing}"
    for row in SETTINGS:  # no scope left out of a key's rows, none given twice
        assert set(row.scopes) <= set(SCOPES)
    for key in listed:
        scopes = [s for row in SETTINGS if row.key == key for s in row.scopes]
        assert len(scopes) == len(set(scopes)), f"{key} listed twice for one run"


def test_readme_holds_the_generated_table():
    text = README.read_text()
    assert README_START in text and README_END in text
    block = text.split(README_START, 1)[1].split(README_END, 1)[0].strip()
    assert block == markdown_table(), "README settings table is stale: paste `python -m kmtr.paper_settings`"
