"""Every documentation section the code cites exists. Errors and docstrings in the plugin send
the reader to a section by its title (``docs, 'Section title'``; older text ``README, '...'``):
each cited title must be a heading of a page in ``docs/``, with exactly that text."""
import ast
import io
import re
import tokenize

from tests.support.modload import REPO

PLUGIN_DIRS = ("_modules", "_utils", "_runners", "_states", "_beacons")
# README, 'Title' / docs, "Title": the title in either quote, up to the same quote again.
CITATION = re.compile(r"\b(?:README|docs),\s*(['\"])(.+?)\1")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")


def _text(node):
    """The text of a string expression as it runs: a literal, an f-string (its fields as a
    NUL, which no title holds), or literals joined with ``+``; None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "\0" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left), _text(node.right)
        if left is not None or right is not None:
            return (left or "\0") + (right or "\0")
    return None


def _texts(path):
    """Every string (docstrings, messages) and every comment of a Python file, whitespace
    folded: a citation wrapped over lines or split over adjacent literals reads as one."""
    source = path.read_text()
    out = [_text(node) for node in ast.walk(ast.parse(source, str(path)))]
    out += [tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
            if tok.type == tokenize.COMMENT]
    return [" ".join(t.split()) for t in out if t]


def cited_titles():
    """{title: sorted files citing it} over every Python file of the plugin directories."""
    cited = {}
    for directory in PLUGIN_DIRS:
        for path in sorted((REPO / directory).rglob("*.py")):
            for text in _texts(path):
                for _quote, title in CITATION.findall(text):
                    cited.setdefault(title, set()).add(str(path.relative_to(REPO)))
    return {title: sorted(files) for title, files in cited.items()}


def headings(text):
    """The ATX headings of a Markdown page, outside fenced code (where ``# comment`` lines of
    YAML and shell examples are no headings)."""
    out, fence = [], None
    for line in text.splitlines():
        match = FENCE.match(line)
        if fence:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) \
                    and not line.strip()[len(match.group(1)):].strip():
                fence = None
            continue
        if match:
            fence = match.group(1)
            continue
        heading = HEADING.match(line)
        if heading:
            out.append(heading.group(1).strip())
    return out


def doc_headings():
    """{heading: pages} over ``docs/**/*.md`` (the build output aside)."""
    out = {}
    for page in sorted((REPO / "docs").rglob("*.md")):
        if "_build" in page.relative_to(REPO / "docs").parts:
            continue
        for heading in headings(page.read_text()):
            out.setdefault(heading, []).append(str(page.relative_to(REPO)))
    return out


def test_the_code_cites_sections():
    # Not vacuous: the plugin's messages do cite the docs.
    assert len(cited_titles()) >= 1


def test_every_section_the_code_cites_is_a_heading_in_docs():
    have = doc_headings()
    missing = {title: files for title, files in cited_titles().items() if title not in have}
    assert not missing, f"cited but no docs/ heading has this title: {missing}"


def test_every_section_pillar_example_cites_is_a_heading_in_docs():
    text = " ".join((REPO / "pillar.example").read_text().replace("#", " ").split())
    have = doc_headings()
    cited = {title for _quote, title in CITATION.findall(text)}
    assert {title for title in cited if title not in have} == set()


def test_the_extraction_finds_wrapped_and_split_citations(tmp_path):
    # The forms the plugin uses: a literal split in two, a docstring wrapped, an f-string, a
    # comment; and a page's fenced ``# comment`` is not a heading.
    src = tmp_path / "x.py"
    src.write_text('"""Doc (docs, "Every virsh\n    migrate option")."""\n'
                   'A = ("x (README, \'When the network breaks " "in post-copy\')")\n'
                   'B = f"{A} (docs, \'Schedules\')"\n'
                   "# see docs, 'Triggers'\n")
    found = {t for text in _texts(src) for _q, t in CITATION.findall(text)}
    assert found == {"Every virsh migrate option", "When the network breaks in post-copy",
                     "Schedules", "Triggers"}
    assert headings("# A\n```yaml\n# not one\n```\n## B ##\n") == ["A", "B"]
