"""The documentation: README.md (the newcomer's page) and docs/*.md (the references).

Every contract a user relies on — make targets, ``DGX_SPARK_*`` variables, API routes — is written
down somewhere in them; every relative link and anchor leads somewhere; they speak of the product only.
"""

from __future__ import annotations

import re
from pathlib import Path

from dgx_spark.api.actor import api_routes
from dgx_spark.api.app import create_api

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
TEXT = "\n".join(page.read_text(encoding="utf-8") for page in PAGES)


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    """The anchors of a page's headings (code blocks skipped: a ``# comment`` there is no heading)."""
    anchors: set[str] = set()
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#{1,6} (.+)$", line)):
            anchors.add(_slug(match.group(1)))
    return anchors


def test_every_make_target_is_documented() -> None:
    """Each target of the Makefile's ``.PHONY`` line is named as ``make <target>`` in the docs."""
    phony = re.search(r"^\.PHONY:(.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert phony is not None
    missing = [t for t in phony.group(1).split() if not re.search(rf"`make {re.escape(t)}(?![\w-])", TEXT)]
    assert missing == []


def test_every_environment_variable_is_documented() -> None:
    """Each ``DGX_SPARK_*`` name the code uses appears in the README or docs/ (prefixes aside)."""
    files = [*sorted((ROOT / "dgx_spark").rglob("*.py")), ROOT / "rxconfig.py"]
    found = {name for path in files for name in re.findall(r"DGX_SPARK_[A-Z0-9_]*", path.read_text())}
    names = {name for name in found if not name.endswith("_")}  # DGX_SPARK_USER_*: a prefix
    assert names, "no variable found: the pattern is wrong"
    assert sorted(name for name in names if not re.search(rf"{name}(?![A-Z0-9_])", TEXT)) == []


def _documented(method: str, path: str, text: str) -> bool:
    """Whether a route is written as ``METHOD /path`` (parameter names aside) or under a ``/prefix…`` row."""
    shape = re.sub(r"\{[^}]*\}", "{}", path)
    if re.search(rf"{method} {re.escape(shape)}(?![\w/{{}}-])", text):
        return True
    if method == "GET" and f"`{shape}`" in text:
        return True
    prefixes = re.findall(r"^\| `(/[^`\s]*)…` \|", text, re.M)  # a route table's row for a family of routes
    return any(shape.startswith(prefix) for prefix in prefixes)


def test_every_api_route_is_documented() -> None:
    """Each route of the API (every method) is in the docs, in the ``METHOD /path`` form."""
    text = re.sub(r"\{[^}]*\}", "{}", TEXT)
    routes = [
        (method, route.path) for route in api_routes(create_api().router.routes) for method in route.methods
    ]
    assert len(routes) > 20
    missing = [f"{m} {p}" for m, p in routes if m != "HEAD" and not _documented(m, p, text)]
    assert missing == []


def test_every_relative_link_leads_somewhere() -> None:
    """Links between README.md and docs/*.md name existing files and headings."""
    broken: list[str] = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            name, _, anchor = target.partition("#")
            linked = (page.parent / name).resolve() if name else page
            if not linked.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_the_readme_leads_to_every_page_of_docs() -> None:
    """The README starts with the two commands and links every page under docs/."""
    readme = README.read_text(encoding="utf-8")
    first_block = readme.split("```", 2)[1]
    assert "make run" in first_block and "make test" in first_block
    assert [page.name for page in DOCS if f"](docs/{page.name}" not in readme] == []


def _sources() -> list[Path]:
    """The project's own Python files (the benchmark's Glances virtualenv aside)."""
    folders = ("dgx_spark", "tests", "bench", "scripts", "examples")
    found = [
        path
        for folder in folders
        for path in sorted((ROOT / folder).rglob("*.py"))
        if ".glances-venv" not in path.parts
    ]
    return [*found, ROOT / "rxconfig.py", ROOT / "setup.py"]


def test_the_docs_and_code_speak_of_the_product_only() -> None:
    """No planning words (``issue 9``, the seed document) in the docs, the Makefile or the code."""
    # Not random.seed(0): only the word, and names built on it; and the other codebase's component names.
    words = re.compile(
        r"\b[Ii]ssues? \d|(?<![.@])\b[Ss]eed\b(?!\()|\bseed_|\bSEED_|_seed_"
        r"|useOperationPolling|\bOperations?Tab\b|\bOperationCard\b"
    )
    lines = [
        f"{page.relative_to(ROOT)}:{number}: {line.strip()}"
        for page in [*PAGES, ROOT / "Makefile", *_sources()]
        if page != Path(__file__).resolve()
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        if words.search(line)
    ]
    assert lines == []


def test_the_readme_has_the_threat_model() -> None:
    """README's Security section says who is trusted, who is not, what each auth mode protects."""
    readme = README.read_text(encoding="utf-8")
    section = readme.split("\n## Security\n", 1)[1].split("\n## ", 1)[0]
    for words in ("Trusted:", "Not trusted:", "other local user", "other web page",
                  "`DGX_SPARK_AUTH=local`", "`DGX_SPARK_AUTH=required`", "](docs/security.md)"):
        assert words in section, words
