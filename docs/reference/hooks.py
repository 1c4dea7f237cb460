"""Build-time helpers for the docs site (mkdocs.yml loads this file twice, for two jobs).

1. A Griffe extension, :class:`SphinxMarkup` (``mkdocstrings`` -> ``extensions``): palr's docstrings
   are written for Sphinx/reStructuredText, and mkdocstrings renders their text as Markdown. The
   ``:param:``/``:returns:`` fields are parsed by ``docstring_style: sphinx``; this extension turns
   the rest of the reST that would otherwise show raw into Markdown before rendering:

   - roles (``:class:`~palr_core.data.Split```, ``:func:`preprocess```, ``:mod:``, ``:meth:``...)
     become cross-references when the target is an object the API reference renders (resolved in
     the docstring's own scope, like Python would), and plain code otherwise (``numpy.ndarray``,
     an object in a module the reference has no page for), so a cross-reference never dangles;
   - a paragraph ending in ``::`` (reST's "literal block follows") ends in ``:``;
   - reST simple tables (``====  ====`` borders) become Markdown tables;
   - ``#:`` comments above an attribute (Sphinx's attribute docstrings) become its docstring; an
     undocumented dunder method (``__len__``) is left out like a private name, and so is an
     undocumented dataclass field that its class documents as a ``:param:`` (listed there once);
   - a name a module re-exports from another documented module is documented once, where it is
     defined, and linked from the re-exporting module's docstring.

   The docstrings themselves stay plain reST, readable in the source and in ``help()``.

2. mkdocs hooks (``hooks:``). ``reference/palr_core.md`` gets a table of ``palr_core.__all__`` (name,
   defining module, summary; each name links to its documentation), generated so that it
   cannot go stale. And the hooks put the repository's ``README.md`` into the site as
   ``overview.md``: the docs link to it as ``../README.md`` (right on GitHub, where the README sits
   next to ``docs/``), and the README links to pages as ``docs/<page>.md``. In the site both kinds of
   link are rewritten to the page's site location, so they work in both places and mkdocs still
   validates every other link strictly.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

import griffe

DOCS = Path(__file__).resolve().parent.parent
REPO = DOCS.parent

# ---------------------------------------------------------------------------------------------
# 1. Griffe extension: reST -> Markdown in docstrings
# ---------------------------------------------------------------------------------------------

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const|type):`([^`]+)`")
_TITLED = re.compile(r"^(.*?)\s*<([^>]+)>$")
_BORDER = re.compile(r"^(\s*)(=+)((?:\s+=+)+)\s*$")


def _documented_modules() -> set[str]:
    """The modules the API reference has a page for: every ``::: module`` line under reference/."""
    found = set()
    for page in (DOCS / "reference").rglob("*.md"):
        found.update(re.findall(r"^:::\s+([\w.]+)", page.read_text(encoding="utf-8"), flags=re.M))
    return found


def _lookup(scope: griffe.Object, name: str, collection) -> griffe.Object | None:
    """The object ``name`` means in the docstring of ``scope`` (as a Python name would resolve)."""
    head, _, rest = name.lstrip(".").partition(".")
    obj = None
    for start in (scope, *_parents(scope)):
        try:
            obj = collection[start.resolve(head)]
            break
        except Exception:  # noqa: BLE001  (griffe raises several kinds for "not here")
            continue
    if obj is None:
        try:
            obj = collection[head]
        except Exception:  # noqa: BLE001
            obj = _lazy_export(head, collection) if scope.path.startswith("palr_core.kit") else None
            if obj is None:
                return None
    try:
        for part in rest.split(".") if rest else []:
            obj = obj.final_target if obj.is_alias else obj
            obj = obj.members[part] if part in obj.members or obj.path != "palr_core.kit" else (
                _lazy_export(part, collection))
        return obj.final_target if obj.is_alias else obj
    except Exception:  # noqa: BLE001  (an unresolvable alias or a missing member)
        return None


def _lazy_export(name: str, collection) -> griffe.Object | None:
    """``palr_core.kit`` exports its submodules' names lazily (``__getattr__``), which a static
    loader cannot see: find ``name`` in the submodule's ``__all__`` instead."""
    try:
        kit = collection["palr_core.kit"]
    except Exception:  # noqa: BLE001
        return None
    for sub in kit.modules.values():
        if name in (sub.exports or ()) and name in sub.members:
            return sub.members[name]
    return None


def _parents(obj: griffe.Object):
    while obj.parent is not None:
        obj = obj.parent
        yield obj


def _rendered(obj: griffe.Object, documented: set[str]) -> bool:
    """Whether the reference renders ``obj`` under its canonical path (so an anchor exists)."""
    chain = [obj, *_parents(obj)]
    module = next(o for o in chain if o.is_module)
    if module.path not in documented:
        return False
    if obj.is_module:
        return True
    return all(o.is_public for o in chain[: chain.index(module)])  # mkdocstrings' `filters: public`


def _roles(text: str, scope: griffe.Object, collection, documented: set[str]) -> str:
    def replace(match: re.Match) -> str:
        target = match.group(1).strip()
        titled = _TITLED.match(target)
        title, target = (titled.group(1), titled.group(2)) if titled else (None, target)
        short = target.startswith("~")
        target = target.lstrip("~")
        label = title or (target.rsplit(".", 1)[-1] if short else target.lstrip("."))
        obj = _lookup(scope, target.removesuffix("()"), collection)
        if obj is not None and _rendered(obj, documented):
            return f"[`{label}`][{obj.path}]"
        return f"`{label}`"

    return _ROLE.sub(replace, text)


def _simple_tables(text: str) -> str:
    """reST simple tables (``===`` borders above, below and under the header) -> Markdown tables."""
    lines = text.split("\n")
    out, i = [], 0
    while i < len(lines):
        border = _BORDER.match(lines[i])
        ends = [j for j in range(i + 1, len(lines)) if lines[j] == lines[i]] if border else []
        if len(ends) < 2:
            out.append(lines[i])
            i += 1
            continue
        spans = [(m.start(), m.end()) for m in re.finditer(r"=+", lines[i])]
        rows: list[list[str]] = []
        for line in lines[i + 1: ends[1]]:
            if line == lines[i]:
                rows.append(None)  # the header/body separator
                continue
            cells = [line[a: spans[k + 1][0] if k + 1 < len(spans) else len(line)].strip()
                     for k, (a, _) in enumerate(spans)]
            if rows and rows[-1] is not None and not cells[0]:  # a continuation line
                rows[-1] = [f"{old} {new}".strip() for old, new in zip(rows[-1], cells)]
            else:
                rows.append(cells)
        cut = rows.index(None) if None in rows else -1
        header, body = rows[:cut] if cut >= 0 else [], rows[cut + 1:]
        head = header[0] if header else [""] * len(spans)
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(spans)]
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
        i = ends[1] + 1
    return "\n".join(out)


def _comment_docstring(attr: griffe.Attribute, loader: griffe.GriffeLoader) -> None:
    """Sphinx's ``#:`` comments (the lines right above an attribute, or after it on its line)
    are that attribute's docstring; Griffe reads only string literals below it."""
    try:
        lines = attr.lines_collection[attr.filepath]
    except Exception:  # noqa: BLE001
        return
    if not attr.lineno:
        return
    text, row = [], attr.lineno - 2
    while row >= 0 and (comment := re.match(r"^\s*#:\s?(.*)$", lines[row])):
        text.insert(0, comment.group(1))
        row -= 1
    if not text and (trailing := re.search(r"\s#:\s?(.*)$", lines[(attr.endlineno or attr.lineno) - 1])):
        text = [trailing.group(1)]
    if text:
        attr.docstring = griffe.Docstring("\n".join(text), lineno=row + 2, parent=attr,
                                          parser=loader.docstring_parser, parser_options=loader.docstring_options)


def _reexports(module: griffe.Module, documented: set[str], loader: griffe.GriffeLoader) -> None:
    """A name a module re-exports (in its ``__all__``, defined in another documented module) is
    documented once, where it is defined; the re-exporting module's page names and links it."""
    again = []
    for name in module.exports or ():
        alias = module.members.get(name)
        try:
            target = alias.final_target if alias is not None and alias.is_alias else None
        except Exception:  # noqa: BLE001  (an alias to something not loaded)
            continue
        if target is not None and _rendered(target, documented):
            alias.public = False
            again.append(f"[`{name}`][{target.path}] (from `{target.module.path}`)")
    if again:
        note = "Also exported from this module: " + ", ".join(again) + "."
        if module.docstring is None:
            module.docstring = griffe.Docstring(note, parent=module, parser=loader.docstring_parser,
                                                parser_options=loader.docstring_options)
        else:
            module.docstring.value += "\n\n" + note


class SphinxMarkup(griffe.Extension):
    """Turn the reST in palr's docstrings into Markdown once the whole package is loaded."""

    def __init__(self) -> None:
        super().__init__()
        self.documented = _documented_modules()

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        if not any(module == pkg.path or module.startswith(pkg.path + ".") for module in self.documented):
            return  # a dependency, loaded to resolve something
        objects = list(_walk(pkg, seen=set()))
        for obj in objects:  # first what is rendered, so that every link below has its target
            self._visibility(obj, loader)
        for obj in objects:
            if obj.docstring is not None:
                text = _simple_tables(obj.docstring.value)
                text = re.sub(r"(\S)::$", r"\1:", text, flags=re.M)
                obj.docstring.value = _roles(text, obj, loader.modules_collection, self.documented)

    def _visibility(self, obj: griffe.Object, loader: griffe.GriffeLoader) -> None:
        if obj.docstring is None and obj.is_attribute:
            _comment_docstring(obj, loader)
        if obj.docstring is None and obj.name.startswith("__") and not obj.is_module:
            obj.public = False  # an undocumented __len__ or __post_init__ is no API to read about
        if obj.is_class and obj.docstring is not None:  # a dataclass field documented as a :param:
            for name in re.findall(r"^\s*:param\s+(?:[^:]*\s)?(\w+):", obj.docstring.value, flags=re.M):
                field = obj.members.get(name)
                if field is not None and not field.is_alias and field.is_attribute and field.docstring is None:
                    field.public = False  # shown once, in the class's parameter list
        if obj.is_module and obj.path in self.documented and obj.parent is not None:  # the root: see API_TABLE
            _reexports(obj, self.documented, loader)


def _walk(obj: griffe.Object, seen: set[str]):
    """``obj`` and everything defined in it (not what it imports), each once."""
    if obj.path in seen:
        return
    seen.add(obj.path)
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member, seen)


# ---------------------------------------------------------------------------------------------
# 2. mkdocs hooks: the README as the site's overview page
# ---------------------------------------------------------------------------------------------

OVERVIEW = "overview.md"
API_TABLE = "<!-- table of palr_core.__all__ -->"


def _api_table() -> str:
    """A row per name in ``palr_core.__all__``, linking to where the name is defined and documented
    (rendering the re-exports themselves would document the whole API twice)."""
    pkg = griffe.load("palr_core", search_paths=[str(REPO)], docstring_parser="sphinx", resolve_aliases=True,
                      extensions=griffe.load_extensions(SphinxMarkup()))
    rows = ["| name | defined in | what it is |", "|---|---|---|"]
    for name in pkg.exports:
        obj = pkg.members[name]
        obj = obj.final_target if obj.is_alias else obj
        summary = obj.docstring.value.split("\n\n")[0] if obj.docstring else ""
        summary = " ".join(summary.split()).replace("|", "\\|")
        if summary.startswith(":"):  # the docstring starts with its field list
            summary = ""
        if obj.module.path == "palr_core":  # only __version__: not rendered, so not linked
            rows.append(f"| `{name}` | | the installed version, `{obj.value}` |")
            continue
        module = obj.module.path.removeprefix("palr_core.")
        rows.append(f"| [`{name}`][{obj.path}] | [{module}][{obj.module.path}] | {summary} |")
    return '<div class="palr-api-table" markdown>\n\n' + "\n".join(rows) + "\n\n</div>"


def _relative(target: str, page_src: str) -> str:
    return posixpath.relpath(target, posixpath.dirname(page_src) or ".")


def on_files(files, config):
    from mkdocs.structure.files import File

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    files.append(File.generated(config, OVERVIEW, content=readme))
    return files


def on_page_markdown(markdown, page, config, files):
    src = page.file.src_uri
    if API_TABLE in markdown:
        markdown = markdown.replace(API_TABLE, _api_table())
    if src == OVERVIEW:  # the README links to pages as docs/<page>.md
        return re.sub(r"\]\(docs/", "](" + (_relative(".", src) + "/").removeprefix("./"), markdown)
    up = "/".join([".."] * (src.count("/") + 1))  # from docs/<src> up to the repository root
    return markdown.replace(f"]({up}/README.md)", f"]({_relative(OVERVIEW, src)})")
