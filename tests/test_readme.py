"""The README is a front door, kept honest: short, its Layout names only paths that exist, its links resolve, its
config menu is conf/, and it quotes no measured figure (those live, dated, in docs/results.md)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RESULTS = REPO / "docs" / "results.md"
MAX_LINES = 150
EXAMPLE = re.compile(r"<!-- example:start -->\n(.*?)<!-- example:end -->", re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# A speed-up or throughput figure: "1.35×", "1.68x", "2 x ", "5.76 tok/s". Loose on purpose: figures go to results.md.
FIGURE = re.compile(r"\d(?:\.\d+)?\s*(?:×|x(?![\w-])|tok/s)")


def _section(text: str, title: str) -> str:
    """The body of the `## title` section, up to the next `## ` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def layout_paths(text: str) -> list[str]:
    """The paths the Layout section's tree names: a top-level entry (no indent) and its children (2-space indent,
    relative to the last top-level folder); deeper-indented lines continue a description and name nothing."""
    block = re.search(r"```\n(.*?)```", _section(text, "Layout"), re.S)
    assert block, "README's Layout section has no fenced tree"
    paths, parent = [], ""
    for line in block.group(1).splitlines():
        if not line.strip():
            continue
        indent, name = len(line) - len(line.lstrip()), line.split()[0]
        if indent == 0:
            parent = name if name.endswith("/") else ""
            paths.append(name)
        elif indent == 2:
            paths.append(parent + name)
    return paths


def figures(text: str) -> list[str]:
    """Speed-up or throughput figures in the text outside the one marked example."""
    return [m.group(0) for m in FIGURE.finditer(EXAMPLE.sub("", text))]


def test_readme_is_at_most_150_lines():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_LINES, f"README.md has {lines} lines; at most {MAX_LINES} (details belong in docs/)"


def test_every_path_the_layout_names_exists():
    paths = layout_paths(README.read_text())
    assert {"main.py", "conf/", "src/specsweep/", "src/specsweep/backends/base.py"} <= set(paths)  # parser sanity
    missing = [path for path in paths if not (REPO / path).exists()]
    assert not missing, f"README's Layout names paths that do not exist: {', '.join(missing)}"


def test_every_relative_link_resolves():
    links = [link for link in LINK.findall(README.read_text()) if not re.match(r"[a-z]+:", link)]
    assert links, "README links to no doc"
    broken = [link for link in links if not (REPO / link.split("#")[0]).exists()]
    assert not broken, f"README links to files that do not exist: {', '.join(broken)}"


def test_links_into_results_name_a_section_that_exists():
    headings = re.findall(r"^#+ (.+)$", RESULTS.read_text(), re.M)
    anchors = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
    wanted = []
    for doc in [README, *sorted((REPO / "docs").glob("*.md"))]:
        for link in LINK.findall(doc.read_text()):
            target, _, anchor = link.partition("#")
            if anchor and ((target == "" and doc == RESULTS) or target.endswith("results.md")):
                wanted.append((doc.name, anchor))
    assert wanted, "no doc links to a section of docs/results.md"
    dangling = [f"{name}#{anchor}" for name, anchor in wanted if anchor not in anchors]
    assert not dangling, f"links to sections docs/results.md does not have: {', '.join(dangling)}"


def test_readme_quotes_no_figure_and_its_example_is_in_results():
    text = README.read_text()
    found = figures(text)
    assert not found, f"README quotes measured figures {found}: move them to docs/results.md (dated) and link"
    example = EXAMPLE.search(text)
    assert example, "README has no <!-- example:start --> ... <!-- example:end --> printed summary"
    results = RESULTS.read_text()
    lines = [line for line in example.group(1).splitlines() if line.strip() and not line.startswith("```")]
    absent = [line for line in lines if line not in results]
    assert lines and not absent, f"the README's example is not recorded in docs/results.md: {absent}"


def test_config_menu_lists_exactly_the_files_in_conf():
    rows = re.findall(r"^\| `([\w/]+/)` \| (.+) \|$", _section(README.read_text(), "Config groups (`conf/`)"), re.M)
    assert len(rows) >= 7, "README's config groups table lists too few groups"
    for group, options in rows:
        listed = set(re.findall(r"`([^`]+)`", options))
        present = {path.stem for path in (REPO / "conf" / group).glob("*.yaml")}
        assert listed == present, f"conf/{group}: README lists {sorted(listed)}, conf/ holds {sorted(present)}"
