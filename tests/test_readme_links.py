"""Every link of the README and the bundle docs resolves (issue 24): a relative link names a file or folder of the
repository, an anchor (``#...``) a heading of its file (GitHub's heading ids), and an external http(s) link is at
least a well-formed URL (no network here). The walker is tested on temporary Markdown files too, so it can fail."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: the documents a user reads: the README, the benchmark records and each bundle's docs
DOCS = sorted({ROOT / "README.md", ROOT / "BENCHMARKS.md", *ROOT.glob("bundles/*/docs/*.md")})

_FENCE = re.compile(r"^(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target "title") and ![alt](target); the target may be <...>; text may hold one level of [..]
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(\S+)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def _prose_lines(text: str, keep_code: bool = False) -> list[tuple[int, str]]:
    """``(line number, line)`` outside fenced code blocks, inline code removed unless ``keep_code``."""
    out, fenced = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append((n, line if keep_code else _INLINE_CODE.sub("", line)))
    return out


def slug(heading: str) -> str:
    """GitHub's id of a heading: the rendered text (link targets, code marks and emphasis dropped), lower case,
    punctuation other than ``-`` and ``_`` removed, spaces as ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors a Markdown file defines: its headings' ids (repeats numbered ``-1``, ``-2`` as GitHub does)
    and explicit ``<a name=...>`` / ``id=`` anchors."""
    seen: dict[str, int] = {}
    out = set()
    text = path.read_text(encoding="utf-8")
    for _, line in _prose_lines(text, keep_code=True):
        m = _HEADING.match(line)
        if m:
            base = slug(m.group(2))
            k = seen.get(base, 0)
            out.add(base if k == 0 else f"{base}-{k}")
            seen[base] = k + 1
        out.update(_HTML_ANCHOR.findall(line))
    return out


def links(path: Path) -> list[tuple[int, str]]:
    """``(line, target)`` of every inline, image and reference link of a Markdown file (not in code)."""
    out = []
    for n, line in _prose_lines(path.read_text(encoding="utf-8")):
        out += [(n, m.group(1).strip("<>")) for m in _LINK.finditer(line)]
        m = _REFERENCE.match(line)
        if m:
            out.append((n, m.group(1).strip("<>")))
    return out


def check_link(doc: Path, target: str, root: Path = ROOT) -> str | None:
    """Why ``target`` (a link in ``doc``) is broken, or ``None`` when it resolves."""
    parts = urlsplit(target)
    if parts.scheme in ("http", "https"):
        host = parts.hostname or ""
        if not re.fullmatch(r"[A-Za-z0-9.-]+", host) or ("." not in host and host != "localhost") or " " in target:
            return f"malformed URL {target!r}"
        return None
    if parts.scheme == "mailto":
        return None if "@" in parts.path else f"malformed address {target!r}"
    if parts.scheme or parts.netloc:
        return f"unsupported link {target!r} (relative paths, #anchors, http(s) and mailto only)"
    file = doc
    if parts.path:
        file = (doc.parent / unquote(parts.path)).resolve()
        try:
            file.relative_to(root.resolve())
        except ValueError:
            return f"{target!r} points outside the repository"
        if not file.exists():
            return f"{target!r}: no such file or folder in the repository"
    if parts.fragment:
        if file.is_dir() or file.suffix.lower() != ".md":
            return f"{target!r}: an anchor on a file that is not Markdown"
        if unquote(parts.fragment).lower() not in anchors(file):
            return f"{target!r}: no heading #{parts.fragment} in {file.name}"
    return None


def broken_links(doc: Path, root: Path = ROOT) -> list[str]:
    """``"file:line: reason"`` for each broken link of ``doc``."""
    out = []
    for n, target in links(doc):
        why = check_link(doc, target, root)
        if why:
            out.append(f"{doc.relative_to(root)}:{n}: {why}")
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_of_the_docs_resolves(doc):
    if doc.name == "README.md":
        assert links(doc), f"{doc}: no links found (is the parser right?)"
    assert broken_links(doc) == []


def test_the_readme_links_the_benchmarks():
    assert any(t.split("#")[0] == "BENCHMARKS.md" for _, t in links(ROOT / "README.md"))


def test_the_walker_finds_broken_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other page\n\n## Setup: step 1 (`pip`)\n")
    (tmp_path / "exists.txt").write_text("x")
    doc = tmp_path / "README.md"
    doc.write_text(
        "# Title\n\n## Time guidance\n\n## Time guidance\n\n"
        "good: [a](exists.txt) [b](docs/other.md#setup-step-1-pip) [c](#time-guidance) [d](#time-guidance-1)\n"
        "good: ![img](exists.txt) [e](https://example.org/x?y=1#z) <https://x.org> [f](docs/)\n"
        "bad: [g](missing.md) [h](#no-such-heading) [i](docs/other.md#nope) [j](https://exa_mple.org/x)\n"
        "bad: [k](../outside.md) [l](https://) [m](ftp://example.org/file)\n"
        "```\n[code](not-checked.md)\n```\n`[inline](not-checked.md)`\n"
        "[ref]: also-missing.md\n")
    found = broken_links(doc, tmp_path)
    assert len(found) == 8, found
    for target in ("missing.md", "#no-such-heading", "docs/other.md#nope", "https://exa_mple.org/x", "../outside.md",
                   "https://", "ftp://example.org/file", "also-missing.md"):
        assert any(repr(target) in f or target in f for f in found), target
    assert not any("not-checked" in f for f in found)
    assert all(f.startswith("README.md:") for f in found)
    (tmp_path / "missing.md").write_text("fixed")
    assert len(broken_links(doc, tmp_path)) == 7  # fixing the file fixes the link


def test_heading_ids_follow_github():
    assert slug("Time guidance: seconds per epoch (2-core CPU)") == "time-guidance-seconds-per-epoch-2-core-cpu"
    assert slug("`medclass model-card` and [links](x.md)") == "medclass-model-card-and-links"
    assert slug("What's here?") == "whats-here"
