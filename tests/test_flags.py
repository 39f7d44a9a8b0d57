"""The flag catalogue (evaluator/flags.yaml): every flag is raised from it, and docs/flags.md is its current page."""
from __future__ import annotations

import re
from pathlib import Path

from evaluator.cli import main
from evaluator.record.flags import CATALOGUE, FLAGS_PAGE, THRESHOLD_FLAGS, flag, flags_markdown

ROOT = Path(__file__).parents[1]


def test_docs_flags_md_is_generated_from_the_catalogue(tmp_path, capsys):
    assert (ROOT / FLAGS_PAGE).read_text(encoding="utf-8") == flags_markdown(), "run `apb docs` and commit"
    for code in CATALOGUE:
        assert f"`{code}`" in flags_markdown()
    (tmp_path / "docs").mkdir()
    (tmp_path / FLAGS_PAGE).write_text("# stale\n")
    assert main(["docs", "--root", str(tmp_path), "--check"]) == 1
    assert "docs/flags.md: is stale or missing" in capsys.readouterr().err
    assert main(["docs", "--root", str(tmp_path)]) == 0 and main(["docs", "--root", str(tmp_path), "--check"]) == 0


def test_flag_codes_are_named_only_where_a_flag_is_raised_from_the_catalogue():
    """No module builds a flag by hand: a catalogue code appears in evaluator/'s modules only as the first
    argument of ``flag`` / ``flag_with_message``, and each code is raised, by the module the catalogue names."""
    raised = set()
    for path in (ROOT / "evaluator").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert '{"code": ' not in text or path.name == "flags.py", path
        for code in CATALOGUE:
            raising = len(re.findall(rf'\bflag\("{re.escape(code)}"', text))
            calls = raising + len(re.findall(rf'flag_with_message\("{re.escape(code)}"', text))
            assert text.count(f'"{code}"') == calls, (path, code)
            if raising:  # where the message is made; flag_with_message only carries it onto the record
                raised.add(code)
                assert CATALOGUE[code].raised_by == path.relative_to(ROOT).as_posix(), (code, path)
    thresholds = {code for code, _ in THRESHOLD_FLAGS}  # raised by sanity_flags' loop over the catalogue
    assert {CATALOGUE[code].raised_by for code in thresholds} == {"evaluator/record/assemble.py"}
    assert raised | thresholds == set(CATALOGUE) and not raised & thresholds


def test_a_threshold_flag_names_a_sanity_limit_of_every_evaluable_protocol():
    from evaluator.protocol import list_protocols

    for protocol in list_protocols():
        if protocol.sanity is None:
            continue
        for kind in CATALOGUE.values():
            assert kind.threshold is None or isinstance(getattr(protocol.sanity, kind.threshold), float), kind.code
    assert flag("hofmn-no-adversarial", share="2.00%", limit="1.00%")["message"].startswith(
        "HO-FMN found no adversarial at any size for 2.00% of the samples (limit 1.00%)")
