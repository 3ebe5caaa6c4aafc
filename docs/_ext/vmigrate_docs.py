"""
What vmigrate's documentation takes from the code at build time, never from a copy:

- :func:`load_plugins`: every plugin file (``_modules``, ``_runners``, ``_states``, ``_beacons``)
  and every shared file (``_utils/vmigrate_*.py``) imported under a name of its own
  (``vmigrate_modules_vmigrate``, ``vmigrate_runners_vmigrate``...; the shared files as
  ``vmigrate_utils_<name>``, the names ``_utils/vmigrate_imports.py`` gives them), so autodoc can
  document three files that are all called ``vmigrate.py``;
- one reference page per file present (``docs/api/``, written at ``builder-inited``, stale ones
  removed): whatever files the directories hold when the docs are built;
- the ``vmigrate-options-table`` directive: ``_utils/vmigrate_options.py``'s ``TABLE``;
- the ``vmigrate-outcome-reasons`` directive: ``_utils/vmigrate_outcome.py``'s ``REASONS``;
- the ``vmigrate-modules`` directive: a table of the files, their Salt names and summaries.

Plain docutils nodes, so the directives also work under docutils' own MyST parser (the unit
tests parse ``docs/options.md`` that way, without a Sphinx build).
"""

import ast
import logging
import pathlib
import runpy
import sys
import types

from docutils import nodes
from docutils.parsers.rst import Directive

REPO = pathlib.Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
API = DOCS / "api"
# directory -> (module-name part, what Salt makes of it). The order is the reference's.
KINDS = {
    "_modules": ("modules", "execution module"),
    "_states": ("states", "state module"),
    "_runners": ("runners", "runner"),
    "_beacons": ("beacons", "beacon"),
    "_utils": ("utils", "shared code (plain Python)"),
}


def plugin_files(repo=REPO):
    """Every documented file as (directory, path), in the reference's order: ``vmigrate*.py``
    of the plugin directories, whatever is there now."""
    return [(d, p) for d in KINDS for p in sorted((repo / d).glob("vmigrate*.py"))]


def module_name(directory, path):
    """The name a file is imported under: ``vmigrate_modules_vmigrate``; a shared file keeps the
    name its own loader gives it, ``vmigrate_utils_vmigrate_options``."""
    return f"vmigrate_{KINDS[directory][0]}_{path.stem}"


def page_name(directory, path):
    """The reference page's docname under ``api/``: ``modules-vmigrate``."""
    return f"{KINDS[directory][0]}-{path.stem}"


def shared_loader(repo=REPO):
    """``_utils/vmigrate_imports.py``: its ``load`` makes the shared files enter ``sys.modules``
    as the plugins themselves import them; its ``load_file`` runs any other file as a module."""
    return runpy.run_path(str(repo / "_utils" / "vmigrate_imports.py"))


def load_plugins(repo=REPO):
    """Import every file of :func:`plugin_files` (see the module docstring). Returns
    {module name: module}."""
    imports = shared_loader(repo)
    out = {}
    for directory, path in plugin_files(repo):
        name = module_name(directory, path)
        out[name] = (imports["load"](path.stem, str(repo / "_utils")) if directory == "_utils"
                     else imports["load_file"](name, str(path)))
    return out


def summary(module):
    """The first sentence of a module's docstring (of its first paragraph, whitespace folded)."""
    paragraph = " ".join((module.__doc__ or "").strip().split("\n\n")[0].split())
    head, dot, _rest = paragraph.partition(". ")
    return head + "." if dot else paragraph


def _inline(text):
    """Text with its ````literal```` parts as literal nodes."""
    out = []
    for i, part in enumerate(text.split("``")):
        if part:
            out.append(nodes.literal(part, part) if i % 2 else nodes.Text(part))
    return out


def _salt_name(directory, module):
    virtual = getattr(module, "__virtualname__", None)
    if directory == "_utils":
        return None
    return virtual or pathlib.Path(module.__file__).stem


def public_data(path, module):
    """The public names a shared file assigns at its top level (``STATUSES = (...)``), which
    autodoc's ``:members:`` leaves out unless a ``#:`` comment documents them: constants the
    code switches on are part of its reference. Loggers, modules and ``HAS_*`` flags are not;
    names with a ``#:`` comment are autodoc's already."""
    from sphinx.pycode import ModuleAnalyzer  # pylint: disable=import-outside-toplevel

    tree = ast.parse(path.read_text(), str(path))
    names = []
    for node in tree.body:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else [])
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Name) and not leaf.id.startswith("_"):
                    names.append(leaf.id)
    documented = {attr for (_cls, attr) in
                  ModuleAnalyzer.for_file(str(path), module.__name__).find_attr_docs()}
    out = []
    for name in dict.fromkeys(names):
        value = getattr(module, name, None)
        if (name in documented or name.startswith("HAS_") or callable(value)
                or isinstance(value, (logging.Logger, types.ModuleType))):
            continue
        out.append(name)
    return out


def page_text(directory, path, module):
    """A reference page in MyST: the file, its Salt name, and autodoc over it (an rST block:
    docstrings are reStructuredText)."""
    rel = f"{directory}/{path.name}"
    name = module_name(directory, path)
    kind = KINDS[directory][1]
    salt_name = _salt_name(directory, module)
    lines = [f"# `{rel}`", ""]
    if salt_name:
        lines += [f"A {kind}: Salt calls its functions `{salt_name}.<function>`. "
                  f"Documented here as the Python module `{name}`.", ""]
    else:
        lines += [f"Shared code, imported as plain Python under the name `{name}` "
                  "(`_utils/vmigrate_imports.py`), never through `__utils__`.", ""]
    lines += ["```{eval-rst}", f".. automodule:: {name}", "   :members:", "   :undoc-members:",
              ""]
    if directory == "_utils":
        for data in public_data(path, module):
            # A long value (the options table) is its own page's: the name and comment suffice.
            short = len(repr(getattr(module, data))) <= 240
            lines += [f".. autodata:: {name}.{data}"] + ([] if short else ["   :no-value:"])
            lines += [""]
    lines += ["```", ""]
    return "\n".join(lines)


def write_pages(repo=REPO, api=API):
    """Write ``api/<page>.md`` (ignored by git) for every file present, leave unchanged pages
    untouched (their mtime drives Sphinx's rebuild) and remove the pages of files that are
    gone. Files not imported yet are imported first (:func:`load_plugins`)."""
    modules = {name: sys.modules.get(name) for name in
               (module_name(d, p) for d, p in plugin_files(repo))}
    if None in modules.values():
        modules = load_plugins(repo)
    api.mkdir(exist_ok=True)
    wanted = {}
    for directory, path in plugin_files(repo):
        module = modules[module_name(directory, path)]
        wanted[f"{page_name(directory, path)}.md"] = page_text(directory, path, module)
    for old in api.glob("*.md"):
        if old.name not in wanted:
            old.unlink()
    for filename, text in wanted.items():
        target = api / filename
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
    return sorted(wanted)


# ---- tables ---------------------------------------------------------------------------------

def _cell(*children):
    entry = nodes.entry()
    entry += nodes.paragraph("", "", *children)
    return entry


def _table(header, rows, widths):
    table = nodes.table(classes=["vmigrate-generated"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for width in widths:
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    row = nodes.row()
    for title in header:
        row += _cell(nodes.Text(title))
    head += row
    group += head
    body = nodes.tbody()
    for cells in rows:
        row = nodes.row()
        for children in cells:
            row += _cell(*children)
        body += row
    group += body
    return table


def _flag_nodes(flag):
    """``--copy-storage-all / --copy-storage-inc`` as two literals; ``(static migration)`` as
    text."""
    out = []
    for i, part in enumerate(flag.split(" / ")):
        if i:
            out.append(nodes.Text(" / "))
        literal = part.startswith("-") or " " not in part and not part.startswith("(")
        out.append(nodes.literal(part, part) if literal else nodes.Text(part))
    return out


def shared(name, repo=REPO):
    """The shared module ``name`` as the code loads it."""
    return shared_loader(repo)["load"](name, str(repo / "_utils"))


def options_table(table=None):
    """The options table as a docutils table: ``TABLE`` of ``_utils/vmigrate_options.py``
    unless given."""
    if table is None:
        table = shared("vmigrate_options").TABLE
    rows = [(_flag_nodes(flag), [nodes.Text(text)]) for flag, text in table]
    return _table(("virsh migrate", "vmigrate"), rows, (35, 65))


def table_rows(table_node):
    """The (cell, cell, ...) texts of a table's body rows: what a reader sees."""
    return [tuple(entry.astext() for entry in row.findall(nodes.entry))
            for body in table_node.findall(nodes.tbody) for row in body.children]


def reasons_table(reasons=None):
    """``REASONS`` of ``_utils/vmigrate_outcome.py`` (reason code: meaning) as a table."""
    if reasons is None:
        reasons = shared("vmigrate_outcome").REASONS
    rows = [([nodes.literal(code, code)], [nodes.Text(words)]) for code, words in reasons.items()]
    return _table(("reason", "what it means"), rows, (25, 75))


class OptionsTable(Directive):
    """``vmigrate-options-table``: every ``virsh migrate`` option and its vmigrate name."""

    has_content = False

    def run(self):
        return [options_table()]


class OutcomeReasons(Directive):
    """``vmigrate-outcome-reasons``: the reason codes an outcome carries."""

    has_content = False

    def run(self):
        return [reasons_table()]


class ModuleList(Directive):
    """``vmigrate-modules``: every documented file, what Salt makes of it, its summary, a link
    to its reference page (Sphinx only)."""

    has_content = False

    def run(self):
        from sphinx import addnodes  # pylint: disable=import-outside-toplevel

        rows = []
        for directory, path in plugin_files():
            module = sys.modules[module_name(directory, path)]
            link = addnodes.pending_xref("", refdomain="std", reftype="doc",
                                         reftarget=f"/api/{page_name(directory, path)}",
                                         refexplicit=True, refwarn=True)
            rel = f"{directory}/{path.name}"
            link += nodes.literal(rel, rel)
            salt_name = _salt_name(directory, module)
            kind = [nodes.Text(KINDS[directory][1])]
            if salt_name:
                kind += [nodes.Text(" "), nodes.literal(salt_name, salt_name)]
            rows.append(([link], kind, _inline(summary(module))))
        return [_table(("file", "what", "summary"), rows, (30, 20, 50))]


# ---- Sphinx -----------------------------------------------------------------------------

def _builder_inited(app):  # pylint: disable=unused-argument
    write_pages()


def _skip_member(app, what, name, obj, skip, options):  # pylint: disable=unused-argument
    """Leave out what a module imported or made for itself: loggers, modules, the libvirt
    flag ``HAS_LIBVIRT``."""
    if what != "module":
        return None
    if isinstance(obj, (logging.Logger, types.ModuleType)) or name.startswith("HAS_"):
        return True
    return None


def _data_docstring(app, what, name, obj, options, lines):  # pylint: disable=unused-argument
    """A constant has no docstring of its own: autodoc would show its type's (``dict()`` ...)."""
    doc = type(obj).__doc__
    doc = doc.strip() if isinstance(doc, str) else ""
    if what == "data" and lines and doc and lines[0].strip() == doc.splitlines()[0].strip():
        lines.clear()


def setup(app):
    app.add_directive("vmigrate-options-table", OptionsTable)
    app.add_directive("vmigrate-outcome-reasons", OutcomeReasons)
    app.add_directive("vmigrate-modules", ModuleList)
    app.connect("builder-inited", _builder_inited)
    app.connect("autodoc-skip-member", _skip_member)
    app.connect("autodoc-process-docstring", _data_docstring)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
