"""The URL scheme registry (evaluator/registry/url_schemes.yaml) is the one place a scheme is stated: apb validate,
the manifest schema and the fetcher read it, and a new scheme is its entry plus its downloader."""
from __future__ import annotations

import ast
import hashlib
import importlib
import re
from pathlib import Path

import pytest

from evaluator.checkpoint import sources
from evaluator.checkpoint.download import stream_url
from evaluator.checkpoint.fetch import fetch_checkpoint
from evaluator.errors import APBError
from evaluator.registry import url_schemes
from evaluator.repository.manifest import url_problem
from evaluator.repository.schema import load_schema
from tests.support.http_server import LocalServer

ROOT = Path(__file__).resolve().parents[1]
WEB_SCHEMES = ("https", "http", "file")  # words the code also uses for other things (links, a record's "file")
ZENODO = """\
  zenodo:
    syntax: '^zenodo://(?P<record>[0-9]+)/(?P<file>[A-Za-z0-9._-]+)$'
    form: "zenodo://<record>/<file>"
    example: "zenodo://1234567/r18_c10_w90.pt"
    wrong_form: "write a Zenodo file as zenodo://<record id>/<file name>"
    manifests: accepted
    downloader: "sources:download_zenodo"
"""


def _code_strings(path: Path) -> list[str]:
    """The string constants of a module, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def _modules_naming(name: str) -> set[str]:
    return {path.relative_to(ROOT).as_posix() for path in (ROOT / "evaluator").rglob("*.py")
            if any(text == name or f"{name}://" in text for text in _code_strings(path))}


@pytest.mark.parametrize("name", list(url_schemes.schemes()))
def test_each_example_parses_and_validates_as_its_scheme_says(name):
    scheme = url_schemes.schemes()[name]
    assert url_schemes.parse(scheme.example)[0] is scheme
    local_ok = url_problem(scheme.example, allow_file_urls=True)
    published = url_problem(scheme.example, allow_file_urls=False)
    if scheme.manifests == "accepted":
        assert local_ok is None and published is None
    elif scheme.manifests == "local":
        assert local_ok is None and published == url_schemes.refusal(scheme)
    else:
        assert local_ok == published == url_schemes.refusal(scheme)


@pytest.mark.parametrize("name", list(url_schemes.schemes()))
def test_each_downloader_and_hint_is_a_function(name):
    scheme = url_schemes.schemes()[name]
    module, _, attribute = scheme.downloader.partition(":")
    assert callable(getattr(importlib.import_module(f"evaluator.checkpoint.{module}"), attribute))
    for hint in scheme.hints:
        module, _, attribute = hint.partition(":")
        assert callable(getattr(importlib.import_module(f"evaluator.registry.{module}"), attribute))


def test_the_manifest_schema_takes_its_url_pattern_from_the_registry():
    usable = [scheme.prefix for scheme in url_schemes.schemes().values() if scheme.manifests != "refused"]
    assert load_schema("manifest")["$defs"]["url"]["pattern"] == "^(" + "|".join(usable) + ")"
    assert usable[:4] == ["https://", "gdrive://", "hf://", "file://"]
    written = (ROOT / "evaluator" / "schemas" / "manifest.schema.json").read_text()
    assert "gdrive://" not in written and "hf://" not in written  # the schema file states no scheme of its own


@pytest.mark.parametrize("name", [name for name in url_schemes.schemes() if name not in WEB_SCHEMES])
def test_a_scheme_is_named_in_at_most_two_modules(name):
    """Its page-link hints and its downloader at most; every other module asks the registry."""
    assert len(_modules_naming(name)) <= 2, sorted(_modules_naming(name))


def test_the_manifest_check_and_the_fetcher_name_no_scheme():
    generic = ["evaluator/repository/manifest.py", "evaluator/repository/schema.py", "evaluator/checkpoint/fetch.py",
               "evaluator/checkpoint/download.py", "evaluator/registry/url_schemes.py"]
    for name in url_schemes.schemes():
        named = {module for module in generic if any(f"{name}://" in text for text in _code_strings(ROOT / module))}
        if name not in WEB_SCHEMES:
            named |= {module for module in generic if name in _code_strings(ROOT / module)}
        assert not named, (name, named)


def test_the_same_syntax_refuses_a_url_in_apb_validate_and_in_the_fetcher(tmp_path):
    for url in ("gdrive://short", "hf://owner/repo/../secret@" + "0" * 40, "hf://owner/model.pt"):
        scheme = url_schemes.scheme_of(url)
        assert scheme is not None and url_problem(url, allow_file_urls=False) == scheme.wrong_form
        with pytest.raises(APBError, match=re.escape(scheme.wrong_form)):
            fetch_checkpoint(url, None, cache_dir=tmp_path, progress=False)


@pytest.fixture
def with_zenodo(tmp_path, monkeypatch):
    """The registry with a zenodo:// entry (the file a new scheme touches), and its downloader in sources.py
    (the other file)."""
    registry = tmp_path / "url_schemes.yaml"
    registry.write_text(url_schemes.SCHEMES_FILE.read_text() + ZENODO)
    monkeypatch.setattr(url_schemes, "SCHEMES_FILE", registry)
    with LocalServer() as server:
        def download_zenodo(partial, options, fields):
            stream_url(partial, options, server.url(f"/records/{fields['record']}/files/{fields['file']}"))

        monkeypatch.setattr(sources, "download_zenodo", download_zenodo, raising=False)
        url_schemes.schemes.cache_clear()
        load_schema.cache_clear()
        try:
            yield server
        finally:
            monkeypatch.undo()
            url_schemes.schemes.cache_clear()
            load_schema.cache_clear()


def test_a_new_scheme_is_one_registry_entry_and_one_downloader(with_zenodo, tmp_path):
    server, data = with_zenodo, b"\x80\x02zenodo checkpoint bytes"
    server.add("/records/1234567/files/r18_c10_w90.pt", data)
    assert url_problem("zenodo://1234567/r18_c10_w90.pt", allow_file_urls=False) is None
    assert url_problem("zenodo://r18.pt", allow_file_urls=False) == "write a Zenodo file as zenodo://<record id>/<file name>"
    assert "zenodo://" in load_schema("manifest")["$defs"]["url"]["pattern"]
    assert "zenodo://<record>/<file>" in load_schema("manifest")["$defs"]["url"]["x-hint"]
    assert "use https://, gdrive://, hf:// or zenodo://" in (url_problem("ftp://x.org/m.pt", allow_file_urls=False) or "")
    fetched = fetch_checkpoint("zenodo://1234567/r18_c10_w90.pt", hashlib.sha256(data).hexdigest(),
                               cache_dir=tmp_path / "cache", progress=False)
    assert fetched.read_bytes() == data
