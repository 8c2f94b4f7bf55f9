"""LICENSE and CITATION.cff: the licence pyproject names is shipped, and the citation file is valid CFF 1.2.0.

cffconvert is not a dependency, so the checks here are the parts of the CFF 1.2.0 schema a citation file most often
gets wrong: the required top-level keys, every author named (family-names or an entity's name), every reference
typed, titled and authored, and the licence an SPDX identifier that agrees with pyproject.toml.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = ("cff-version", "message", "title", "authors")
# The reference types of the CFF 1.2.0 schema that a paper or a piece of software can take.
REFERENCE_TYPES = {"article", "blog", "book", "conference-paper", "generic", "manual", "proceedings", "report",
                   "software", "thesis", "unpublished", "website"}
DOI = re.compile(r"^10\.\d{4,9}(\.\d+)?/[A-Za-z0-9:/_;\-.()\[\]\\]+$")  # the schema's DOI pattern


def _authors_problems(authors: Any, where: str) -> list[str]:
    if not isinstance(authors, list) or not authors:
        return [f"{where}: authors must be a non-empty list"]
    return [f"{where}: author {i + 1} has neither family-names nor name" for i, a in enumerate(authors)
            if not isinstance(a, dict) or not (str(a.get("family-names") or "").strip() or str(a.get("name") or "").strip())]


def cff_problems(data: Any) -> list[str]:
    """What makes ``data`` (a parsed CITATION.cff) invalid CFF 1.2.0; empty when nothing does."""
    if not isinstance(data, dict):
        return ["the file is not a YAML mapping"]
    problems = [f"missing required key {k!r}" for k in REQUIRED if k not in data]
    if data.get("cff-version") not in (None, "1.2.0"):
        problems.append(f"cff-version must be the string '1.2.0', got {data.get('cff-version')!r}")
    for key in ("message", "title"):
        if key in data and not (isinstance(data[key], str) and data[key].strip()):
            problems.append(f"{key} must be a non-empty string")
    if "authors" in data:
        problems += _authors_problems(data["authors"], "the project")
    if "version" in data and not isinstance(data["version"], str | int | float):
        problems.append("version must be a string or number")
    if "doi" in data and not DOI.match(str(data["doi"])):
        problems.append(f"doi {data['doi']!r} is not a DOI")
    refs = data.get("references", [])
    if not isinstance(refs, list):
        return [*problems, "references must be a list"]
    for i, ref in enumerate(refs):
        where = f"reference {i + 1}"
        if not isinstance(ref, dict):
            problems.append(f"{where} is not a mapping")
            continue
        where = f"reference {i + 1} ({ref.get('title', 'untitled')})"
        if ref.get("type") not in REFERENCE_TYPES:
            problems.append(f"{where}: type {ref.get('type')!r} is missing or not a CFF reference type")
        if not (isinstance(ref.get("title"), str) and ref["title"].strip()):
            problems.append(f"{where}: missing title")
        problems += _authors_problems(ref.get("authors"), where)
        if "doi" in ref and not DOI.match(str(ref["doi"])):
            problems.append(f"{where}: doi {ref['doi']!r} is not a DOI")
    return problems


@pytest.fixture(scope="module")
def citation() -> dict:
    return yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_citation_file_is_valid_cff(citation):
    assert cff_problems(citation) == []


def test_citation_cites_the_original_study_and_the_libraries_it_builds_on(citation):
    titles = " | ".join(r["title"] for r in citation["references"])
    for name in ("Biased Vision Model", "Captum", "Quantus", "Zennit"):
        assert name in titles
    assert {r["authors"][0].get("family-names") for r in citation["references"]} >= {"Kokhlikyan", "Hedström",
                                                                                       "Anders"}


def test_citation_agrees_with_pyproject(citation, project):
    assert project["license"] == {"text": "MIT"}
    assert citation["license"] == "MIT"
    assert str(citation["version"]) == project["version"]


def test_license_file_is_mit():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 the shortcut-bench authors" in text


@pytest.mark.parametrize("key", REQUIRED)
def test_the_check_fails_without_a_required_key(citation, key):
    broken = copy.deepcopy(citation)
    del broken[key]
    assert f"missing required key {key!r}" in cff_problems(broken)


@pytest.mark.parametrize("key", ["type", "title", "authors"])
def test_the_check_fails_on_an_incomplete_reference(citation, key):
    broken = copy.deepcopy(citation)
    del broken["references"][1][key]
    assert any(p.startswith("reference 2") for p in cff_problems(broken))


def test_the_check_fails_on_an_unnamed_author_or_a_bad_version(citation):
    broken = copy.deepcopy(citation)
    broken["authors"] = [{"given-names": "Ada"}]
    broken["cff-version"] = "1.1.0"
    problems = cff_problems(broken)
    assert "the project: author 1 has neither family-names nor name" in problems
    assert any(p.startswith("cff-version") for p in problems)
