"""Every link between the docs, and every docs page and anchor the code cites, resolves (GitHub's anchors)."""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MARKDOWN_PAGES = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CITING_SUFFIXES = {".py", ".md", ".j2", ".js", ".css"}
CITING_ROOTS = ["lib", "bench", "tests", "examples", "docs"]

LINK = re.compile(r"\]\(([^)\s]+)\)")
CITATION = re.compile(r"docs/([\w-]+\.md)(?:#([\w-]+))?")
HEADING = re.compile(r"#{1,6}\s+(.*)")


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


@lru_cache(maxsize=None)
def anchors(page: Path) -> frozenset[str]:
    """The anchors of a Markdown page's headings outside code fences; repeats get -1, -2, … as on GitHub."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    in_fence = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        match = None if in_fence else HEADING.match(line)
        if match:
            anchor = github_anchor(match.group(1))
            repeat = seen.get(anchor, 0)
            seen[anchor] = repeat + 1
            found.add(anchor if repeat == 0 else f"{anchor}-{repeat}")
    return frozenset(found)


def _label(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def broken_links(page: Path) -> list[str]:
    """Relative links of a Markdown page whose file or heading does not exist."""
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{_label(page)}: {target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{_label(page)}: {target}: no such heading")
    return broken


def broken_citations(source: Path) -> list[str]:
    """`docs/<page>.md[#anchor]` citations in a file whose page or heading does not exist."""
    broken = []
    for page_name, anchor in CITATION.findall(source.read_text(encoding="utf-8", errors="replace")):
        page = ROOT / "docs" / page_name
        if not page.is_file():
            broken.append(f"{_label(source)}: docs/{page_name}: no such page")
        elif anchor and anchor not in anchors(page):
            broken.append(f"{_label(source)}: docs/{page_name}#{anchor}: no such heading")
    return broken


def citing_files() -> list[Path]:
    files = [*ROOT.glob("*.py"), ROOT / "README.md"]
    for folder in CITING_ROOTS:
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in CITING_SUFFIXES and p.is_file()]
    # This file names broken citations on purpose.
    return sorted(set(files) - {Path(__file__).resolve()})


def test_markdown_links_resolve() -> None:
    assert [problem for page in MARKDOWN_PAGES for problem in broken_links(page)] == []


def test_docs_citations_in_code_and_docs_resolve() -> None:
    assert [problem for source in citing_files() for problem in broken_citations(source)] == []


def test_anchor_rules_match_githubs() -> None:
    cache_models = anchors(ROOT / "docs" / "cache-models.md")
    assert {"tiers-hbm--dram--ssd", "why-each-miss", "effective-eviction-time"} <= cache_models
    assert github_anchor("The `--kv-model` option: [presets](x.md)") == "the---kv-model-option-presets"


def test_broken_links_and_citations_are_reported(tmp_path: Path) -> None:
    routes = ROOT / "docs" / "routes.md"
    page = tmp_path / "page.md"
    page.write_text(f"[a]({routes}#no-such-heading) [b](missing.md) [c]({routes}#db-only)\n", encoding="utf-8")
    assert broken_links(page) == [f"{page}: {routes}#no-such-heading: no such heading", f"{page}: missing.md: no such file"]
    source = tmp_path / "tool.py"
    source.write_text("# docs/routes.md#db-only, docs/routes.md#nowhere, docs/nowhere.md\n", encoding="utf-8")
    assert broken_citations(source) == [f"{source}: docs/routes.md#nowhere: no such heading",
                                        f"{source}: docs/nowhere.md: no such page"]
