"""Build the fmops_nb documentation site from the notebooks in `nbs/`, with their outputs.

The module notebooks are the documentation. nbdev renders them with quarto, which cannot be installed here, so this
script does the part of `nbdev-docs` the project needs with what it already depends on:

1. **Execute** each notebook the way `nbdev-test` does (the same cell processor, the same skip flags from
   `tst_flags`, an in-process IPython shell in `nbs/`), with a `show_doc` cell after each exported definition, as
   nbdev's docs add. Cells marked `#| heavy` run too (`--skip-heavy` leaves them out, and the page says so); any
   error fails the build.
2. **Freeze the panels**: an ipywidgets panel cannot run in a static page, so each one displayed is replaced by the
   HTML it shows (its `HTML` children as they are, its controls as disabled form elements), taken after every cell so
   a live panel (a fine-tune following its run) shows its last state.
3. **Render** with nbconvert's JupyterLab template (`docs/template/`): exported source folds under its API entry,
   names in backticks link to their entry (from `fmops_nb/_modidx.py`), links to notebooks become links to pages.
4. **Generate the references** from the code, so they cannot go stale: the report templates with their parameters
   (`fmops report templates`), the fine-tune spec keys (`%fmops help finetune`), and the command line (the argparse
   parser of `fmops_nb.cli`).
5. **Check the links** (`--check-links`): every internal link and `#anchor` must resolve; external links are listed.

    python docs/build.py --check-links        # build into _docs/ (emptied first), then check its links
    python docs/build.py --out DIR --skip-heavy --only index guide_drift ref_cli   # a quick partial build
    python docs/build.py --check-links DIR    # check a site already built
"""
from __future__ import annotations

import argparse, html, json, multiprocessing, os, re, shutil, sys, tempfile, time, traceback
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
NBS, DOCS = ROOT / 'nbs', ROOT / 'docs'
SECTIONS = ('Get started', 'Workflows', 'Reference', 'Modules')
# the workflow pages, in the order a maintainer meets them; a guide_*.ipynb not listed here follows them
GUIDES = ('guide_drift', 'guide_finetune', 'guide_diff_promote', 'guide_reports', 'guide_policies')
WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json'


# ---------------------------------------------------------------------------------------------------- the pages
@dataclass
class Page:
    "One page of the site: from a notebook in `nbs/`, or generated (`source` None)."
    slug: str # the page is `slug.html`; a module notebook's slug is its module name, as in `_modidx.py`'s links
    title: str
    section: str
    source: Path | None = None
    summary: str = ''

    @property
    def file(self) -> str: return f"{self.slug}.html"


def _first(nb:dict, pattern:str) -> str:
    "The first match of `pattern` (one group) in the notebook's markdown, or ''."
    for c in nb['cells']:
        if c['cell_type'] == 'markdown' and (m := re.search(pattern, ''.join(c['source']), re.M)): return m[1].strip()
    return ''


def _default_exp(nb:dict) -> str:
    for c in nb['cells']:
        if c['cell_type'] == 'code' and (m := re.search(r'^#\|\s*default_exp\s+(\S+)', ''.join(c['source']), re.M)):
            return m[1]
    return ''


REFERENCES = [Page('ref_templates', 'Report templates', 'Reference',
                   summary='Each template in templates/ with its parameters, types and defaults.'),
              Page('ref_finetune_spec', 'Fine-tune spec', 'Reference',
                   summary='Every key of a %%fmops finetune spec: type, default, meaning.'),
              Page('ref_cli', 'Command line', 'Reference', summary='Every fmops subcommand and its flags.')]


def pages(nbs:Path=NBS) -> list[Page]:
    "Every page of the site, in the navigation's order."
    found = []
    for p in sorted(nbs.glob('*.ipynb')):
        nb = json.loads(p.read_text())
        title, summary = _first(nb, r'^#\s+(.+)$') or p.stem, _first(nb, r'^>\s*(.+)$')
        if p.stem == 'index': found.append(Page('index', 'Getting started', 'Get started', p, summary))
        elif p.stem.startswith('guide_'): found.append(Page(p.stem, title, 'Workflows', p, summary))
        else: found.append(Page(_default_exp(nb) or p.stem, title, 'Modules', p, summary))
    order = {s: i for i, s in enumerate(GUIDES)}
    found += REFERENCES
    slugs = [p.slug for p in found]
    if dup := sorted({s for s in slugs if slugs.count(s) > 1}):
        raise RuntimeError(f"Two pages would be {', '.join(d + '.html' for d in dup)}: rename a notebook.")
    return sorted(found, key=lambda pg: (SECTIONS.index(pg.section), order.get(pg.slug, len(order)),
                                         pg.source.name if pg.source else ''))


def nav_html(all_pages:list[Page], current:Page) -> str:
    "The site navigation; the current page is marked, and `<!--toc-->` stands where its sections go."
    out = []
    for s in SECTIONS:
        items = ''.join(f"<li class='{'current' if p is current else ''}'>"
                        f"<a href='{p.file}' title='{_attr(p.summary)}'>{html.escape(p.title)}</a>"
                        f"{'<!--toc-->' if p is current else ''}</li>"
                        for p in all_pages if p.section == s)
        if items: out.append(f"<h2>{s}</h2><ul>{items}</ul>")
    return ''.join(out)


# --------------------------------------------------------------------------------- panels as static HTML
def _attr(v) -> str: return html.escape(str(v), quote=True)


_LAYOUT = ('width', 'height', 'min_width', 'max_width', 'min_height', 'max_height', 'flex', 'flex_flow', 'display',
           'justify_content', 'justify_items', 'align_content', 'align_items', 'align_self', 'order', 'overflow',
           'margin', 'padding', 'border_top', 'border_right', 'border_bottom', 'border_left', 'visibility',
           'grid_template_columns', 'grid_template_rows', 'grid_template_areas', 'grid_gap', 'grid_area',
           'grid_row', 'grid_column', 'top', 'bottom', 'left', 'right')


def _look(w, *kinds:str) -> str:
    "The class and style attributes ipywidgets gives `w`'s element: its kind, its added classes, its layout."
    lay = getattr(w, 'layout', None)
    css = ';'.join(f"{k.replace('_', '-')}:{v}" for k in _LAYOUT if (v := getattr(lay, k, None)))
    cls = ' '.join(['jupyter-widgets', *kinds, *getattr(w, '_dom_classes', ())])
    return f" class='{_attr(cls)}'" + (f" style='{_attr(css)}'" if css else '')


def _label(w) -> str:
    d = getattr(w, 'description', '')
    return f"<label class='widget-label'>{html.escape(d)}</label>" if d else ''


def widget_html(w) -> str:
    """What the ipywidgets widget `w` shows, as static HTML in the elements and classes ipywidgets itself renders
    (so a panel's own stylesheet applies): `HTML` values as they are (the panels build them escaped), boxes and grids
    with their layout, controls as disabled form elements holding their value; what the layout hides is left out."""
    import ipywidgets as W
    if getattr(getattr(w, 'layout', None), 'display', None) == 'none': return ''
    if isinstance(w, (W.HTML, W.HTMLMath)):
        return f"<div{_look(w, 'widget-html')}><div class='widget-html-content'>{w.value}</div></div>"
    if isinstance(w, W.Label): return f"<div{_look(w, 'widget-label')}>{html.escape(str(w.value))}</div>"
    if isinstance(w, (W.Tab, W.Accordion, W.Stack)):
        titles = list(getattr(w, 'titles', ()) or ())
        return f"<div{_look(w, 'widget-container', 'widget-box', 'widget-vbox')}>" + ''.join(
            f"<details class='fmops-static-section' open><summary>"
            f"{html.escape(str(titles[i]) if i < len(titles) and titles[i] else f'part {i + 1}')}"
            f"</summary>{widget_html(c)}</details>" for i, c in enumerate(w.children)) + "</div>"
    if isinstance(w, W.Box):
        kind = next((k for t, k in ((W.GridBox, 'widget-gridbox'), (W.HBox, 'widget-hbox'), (W.VBox, 'widget-vbox'))
                     if isinstance(w, t)), 'widget-box')
        return (f"<div{_look(w, 'widget-container', 'widget-box', kind)}>"
                f"{''.join(widget_html(c) for c in w.children)}</div>")
    if isinstance(w, (W.Button, W.ToggleButton)):
        mod = [f"mod-{w.button_style}"] if getattr(w, 'button_style', '') else []
        if isinstance(w, W.ToggleButton) and w.value: mod.append('mod-active')
        if w.disabled: mod.append('mod-disabled') # disabled in the panel itself, not only in the snapshot
        kind = 'widget-toggle-button' if isinstance(w, W.ToggleButton) else 'widget-button'
        return (f"<button disabled title='{_attr(w.tooltip or '')}'{_look(w, 'jupyter-button', kind, *mod)}>"
                f"{html.escape(w.description)}</button>")
    if isinstance(w, (W.Dropdown, W.Select, W.SelectMultiple, W.RadioButtons, W.ToggleButtons)):
        chosen = set(w.value) if isinstance(w, W.SelectMultiple) else {w.value}
        opts = ''.join(f"<option{' selected' if v in chosen else ''}>{html.escape(str(k))}</option>"
                       for k, v in list(getattr(w, '_options_full', None) or zip(w.options, w.options))[:500])
        multi = ' multiple' if isinstance(w, W.SelectMultiple) else ''
        return (f"<div{_look(w, 'widget-inline-hbox', 'widget-dropdown')}>{_label(w)}"
                f"<select disabled{multi}>{opts}</select></div>")
    if isinstance(w, (W.IntProgress, W.FloatProgress)):
        return (f"<div{_look(w, 'widget-inline-hbox', 'widget-progress')}>{_label(w)}"
                f"<progress value='{_attr(w.value)}' max='{_attr(w.max)}'>{_attr(w.value)}/{_attr(w.max)}"
                f"</progress></div>")
    if isinstance(w, W.Checkbox):
        return (f"<div{_look(w, 'widget-inline-hbox', 'widget-checkbox')}><label><input type='checkbox' disabled"
                f"{' checked' if w.value else ''}> {html.escape(w.description)}</label></div>")
    if isinstance(w, W.Textarea):
        return (f"<div{_look(w, 'widget-inline-hbox', 'widget-textarea')}>{_label(w)}"
                f"<textarea disabled>{html.escape(str(w.value))}</textarea></div>")
    if isinstance(w, W.Output):
        return f"<div{_look(w, 'widget-output')}>" + ''.join(
            o.get('data', {}).get('text/html') or f"<pre>{html.escape(_text(o))}</pre>" for o in w.outputs) + "</div>"
    if isinstance(w, W.Image):
        import base64
        data = base64.b64encode(w.value).decode()
        return f"<img{_look(w, 'widget-image')} alt='' src='data:image/{_attr(w.format)};base64,{data}'>"
    if hasattr(w, 'value'):
        return (f"<div{_look(w, 'widget-inline-hbox', 'widget-text')}>{_label(w)}"
                f"<input disabled value='{_attr(w.value)}'></div>")
    return f"<div{_look(w)}>{html.escape(type(w).__name__)}</div>"


def _text(o:dict) -> str:
    t = o.get('text') or o.get('data', {}).get('text/plain', '')
    return ''.join(t) if isinstance(t, list) else str(t)


def panel_html(w) -> str:
    "A displayed panel, frozen: its static HTML in a frame that says it is a snapshot."
    return (f"<div class='fmops-static-panel jp-OutputArea-output' data-widget='{_attr(type(w).__name__)}'>"
            f"<div class='fmops-static-caption'>{html.escape(type(w).__name__)} — a snapshot; interactive in "
            f"JupyterLab</div>{widget_html(w)}</div>")


class Localizer:
    """Copies the files an output links to (a report's HTML next to the notebook, a chart) into the site, and points
    the links at the copies: a page must not link into the machine that built it."""
    _REF = re.compile(r'''(\b(?:href|src)=)(["'])([^"'#]*)(#[^"']*)?\2''')
    def __init__(self, out:Path, slug:str): self.out, self.slug, self.done = out, slug, {}
    def __call__(self, text:str) -> str:
        return self._REF.sub(self._one, text) if isinstance(text, str) and ('href=' in text or 'src=' in text) else text
    def _one(self, m) -> str:
        ref = unquote(m[3])
        if not ref or urlsplit(ref).scheme or ref.startswith('/'): return m[0]
        f = Path(ref).resolve()
        if not f.is_file(): return m[0]
        if f not in self.done:
            import hashlib
            rel = f"assets/outputs/{self.slug}/{hashlib.sha1(str(f).encode()).hexdigest()[:8]}-{f.name}"
            (self.out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, self.out / rel)
            self.done[f] = rel
        return f"{m[1]}{m[2]}{self.done[f]}{m[4] or ''}{m[2]}"


class PanelFreezer:
    "Keeps, for every widget view displayed so far, the latest static HTML of its widget."
    def __init__(self, localize=lambda h: h): self.views, self.localize = {}, localize # model_id -> (widget, html)
    def __call__(self, cell=None):
        try: from ipywidgets.widgets.widget import _instances # ipywidgets 8: every live widget by model id
        except ImportError: return
        for o in (cell or {}).get('outputs', []):
            mid = (o.get('data', {}).get(WIDGET_VIEW) or {}).get('model_id')
            if mid and mid in _instances: self.views.setdefault(mid, (_instances[mid], ''))
        for mid, (w, _) in list(self.views.items()):
            try: self.views[mid] = (w, self.localize(panel_html(w)))
            except Exception as e: # a panel that cannot be drawn any more keeps its last drawing
                if not self.views[mid][1]: self.views[mid] = (w, f"<pre>{html.escape(repr(e))}</pre>")


# ------------------------------------------------------------------------------------------- execution
def execute(path:Path, run_heavy:bool=True, localize=lambda h: h):
    """Run the notebook at `path` as `nbdev-test` does (with `show_doc` cells added), failing on the first error.
    Returns the executed cells (nbdev's cell objects, with `directives_`), which cells were left out and why, and the
    frozen panels."""
    from nbdev.config import get_config
    from nbdev.process import NBProcessor
    from nbdev.processors import add_show_docs
    from nbdev.test import _skip_cell # the predicate nbdev-test itself skips cells with
    from execnb.shell import CaptureShell
    cfg = get_config(path.parent)
    flags = cfg.tst_flags.split() if isinstance(cfg.tst_flags, str) else list(cfg.tst_flags or [])
    nb = NBProcessor(path, procs=[add_show_docs], rm_directives=False, process=True).nb
    skip = _skip_cell(nb, flags, ['heavy'] if run_heavy else [])
    freezer, left_out = PanelFreezer(localize), {}

    def post(cell): # links in outputs are resolved where the cell ran, before the notebook moves on
        for o in cell.get('outputs', []):
            for k, v in (o.get('data') or {}).items():
                if k in ('text/html', 'text/markdown'):
                    o['data'][k] = localize(''.join(v) if isinstance(v, list) else v)
        freezer(cell)

    def pre(cell):
        if getattr(cell, 'has_sd', False): return True # documented after the run, from the module (`api_entries`)
        if skip(cell):
            if cell.cell_type == 'code':
                why = [f for f in flags if f in (cell.directives_ or {})]
                left_out[cell.idx_] = ', '.join(why) if why else ''
            return True
        return False

    os.environ['IN_TEST'] = '1'
    if str(cfg.config_path) not in sys.path: sys.path.insert(0, str(cfg.config_path))
    k = CaptureShell(path)
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        k.run_all(nb, exc_stop=True, preproc=pre, postproc=post, cell_timeout=600)
    except BaseException as e:
        raise RuntimeError(f"{path.name} failed:\n{k.prettytb(fname=path) or traceback.format_exc()}") from e
    finally:
        os.chdir(cwd)
    api_entries(nb, f"{cfg.lib_name}.{_default_exp(nb)}" if _default_exp(nb) else None, k.user_ns)
    return nb, left_out, {mid: h for mid, (w, h) in freezer.views.items()}


def api_entries(nb, module:str|None, ns:dict):
    """Fill each `show_doc(NAME)` cell nbdev added with NAME's entry, looked up in the exported `module` (whole, so a
    signature that names a class defined further down resolves) or else in the notebook's namespace after the run."""
    import importlib, warnings
    from nbdev.showdoc import show_doc
    mod = importlib.import_module(module) if module else None
    for c in nb.cells:
        if not getattr(c, 'has_sd', False): continue
        name = re.fullmatch(r'show_doc\((.+)\)', c.source.strip())[1]
        obj = mod
        for part in name.split('.'): obj = getattr(obj, part, None)
        if obj is None: obj = eval(name, dict(ns)) # noqa: S307 (a name nbdev read from an exported cell)
        try: md = show_doc(obj, name=name)._repr_markdown_()
        except Exception as e: # a signature nbdev cannot render: the name and the docstring still document it
            warnings.warn(f"show_doc({name}): {type(e).__name__}: {e}")
            md = f"### {name}\n\n*{(getattr(obj, '__doc__', '') or '').strip()}*"
        c.outputs = [{'output_type': 'display_data', 'metadata': {}, 'data': {'text/markdown': md}}]


# ---------------------------------------------------------------------------------------- from cells to page
_DIRECTIVE = re.compile(r'^\s*#\|.*(\n|$)', re.M)
_HIDE = {'hide', 'default_exp'}
_EXPORT = {'export', 'exporti', 'exports'}
_SHOWN = ('text/html', 'text/markdown', 'text/latex', 'image/svg+xml', 'image/png', 'image/jpeg', 'text/plain')


class Links:
    "Rewrites what a notebook's markdown links to: notebooks to pages, files to copies in the site, names to entries."
    def __init__(self, all_pages:list[Page], out:Path):
        self.out = out
        self.by_notebook = {p.source.name: p.file for p in all_pages if p.source}
        self.names = api_names({p.slug for p in all_pages})

    def local(self, target:str, base:Path) -> str:
        "A link or image source written in a notebook in `base`, as the page must write it."
        parts = urlsplit(target)
        if parts.scheme or parts.netloc or target.startswith(('#', '/', 'data:', 'mailto:')): return target
        path = unquote(parts.path)
        frag = f"#{parts.fragment}" if parts.fragment else ''
        if Path(path).name in self.by_notebook: return self.by_notebook[Path(path).name] + frag
        f = (base / path).resolve()
        if not f.is_file() or ROOT not in f.parents: return target # left for the link check to report
        copy = self.out / 'assets' / f.relative_to(ROOT)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, copy)
        return f"assets/{f.relative_to(ROOT).as_posix()}{frag}"

    def markdown(self, src:str, base:Path) -> str:
        "Markdown with its links rewritten and backticked API names linked, code blocks left alone."
        out = []
        for i, part in enumerate(re.split(r'(^```.*?^```[ \t]*$)', src, flags=re.M | re.S)):
            if i % 2: out.append(part); continue
            part = re.sub(r'(!?\[[^\]\n]*\]\()([^)\s]+)(\))', lambda m: m[1] + self.local(m[2], base) + m[3], part)
            part = re.sub(r'''((?:src|href)=["'])([^"']+)(["'])''', lambda m: m[1] + self.local(m[2], base) + m[3],
                          part)
            part = re.sub(r'(?<![\[`\w])`([A-Za-z_][\w.]*)`(?![\]`(])', self._api_link, part)
            out.append(part)
        return ''.join(out)

    def _api_link(self, m) -> str:
        "A backticked name of the API as a link to its entry (`fix_api_links` checks it once every page exists)."
        if m[1] not in self.names: return m[0]
        name = html.escape(m[1]).replace('_', '&#95;') # inline HTML is still markdown: `_x_` would be emphasis
        return f"<a class='fmops-api-link' href='{self.names[m[1]]}'><code>{name}</code></a>"


def api_names(slugs:set) -> dict:
    "`Name`, `module.Name`, `fmops_nb.module.Name` (and methods) -> `page.html#anchor`, for the names that are unique."
    from fmops_nb._modidx import d
    seen = {}
    for mod, syms in d['syms'].items():
        for qual, (url, _) in syms.items():
            page, _, anchor = url.partition('#')
            if page.removesuffix('.html') not in slugs: continue
            short = qual.removeprefix(mod + '.')
            link = f"{page}#{_anchor(short)}"
            for name in {qual, qual.removeprefix('fmops_nb.'), short}: seen.setdefault(name, set()).add(link)
    return {k: next(iter(v)) for k, v in seen.items() if len(v) == 1 and not k.startswith('_')}


def _anchor(heading:str) -> str:
    "The id a heading gets on a page (nbconvert's rule: the text, spaces as dashes)."
    return re.sub(r'\s+', '-', heading.strip())


def page_notebook(nb, left_out:dict, panels:dict, links:Links, base:Path):
    """The executed notebook as the page shows it: hidden and housekeeping cells gone, `show_doc` results as markdown,
    exported source folded, directives removed, panels as static HTML, links rewritten."""
    import nbformat
    from nbformat.v4 import new_markdown_cell, new_code_cell, new_notebook
    cells = []
    for c in nb.cells:
        d = getattr(c, 'directives_', None) or {}
        if c.cell_type == 'markdown':
            cells.append(new_markdown_cell(links.markdown(c.source, base))); continue
        if c.cell_type != 'code' or d.keys() & _HIDE or not c.source.strip(): continue
        if getattr(c, 'has_sd', False): # nbdev's show_doc: its markdown is the API entry
            cells += [new_markdown_cell(_api_entry(''.join(o['data']['text/markdown']), links, base))
                      for o in c.get('outputs', []) if 'text/markdown' in o.get('data', {})]
            continue
        src = _DIRECTIVE.sub('', c.source).strip('\n')
        cell = new_code_cell(src, execution_count=None)
        cell.metadata['tags'] = []
        if d.keys() & _EXPORT: cell.metadata['tags'].append('fmops-export')
        elif c.idx_ in left_out and left_out[c.idx_]:
            cell.metadata['tags'].append('fmops-not-run'); cell.metadata['fmops_not_run'] = left_out[c.idx_]
        for o in c.get('outputs', []):
            o = json.loads(json.dumps(o))
            data = o.get('data', {})
            for k, v in data.items(): # execnb keeps text as a list of lines, as a notebook file does
                if isinstance(v, list) and not k.endswith('json'): data[k] = ''.join(v)
            if isinstance(o.get('text'), list): o['text'] = ''.join(o['text'])
            if WIDGET_VIEW in data:
                frozen = panels.get(data[WIDGET_VIEW].get('model_id'))
                o['data'] = {'text/html': frozen} if frozen else {'text/plain': data.get('text/plain', '')}
            if o['output_type'] in ('display_data', 'execute_result'):
                o['data'] = {k: v for k, v in o['data'].items() if k in _SHOWN}
                if not o['data']: continue # a record for machines (e.g. application/x.fmops+json): nothing to see
            if o['output_type'] == 'execute_result': o['execution_count'] = None
            cell.outputs.append(nbformat.from_dict(o))
        cells.append(cell)
    out = new_notebook(cells=cells, metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3',
                                                             'language': 'python'},
                                              'language_info': {'name': 'python'}})
    return out


def _api_entry(md:str, links:Links, base:Path) -> str:
    "nbdev's show_doc markdown without quarto's attributes and its source link (to a line number it cannot find)."
    md = re.sub(r'^\[source\]\([^)]*\)\{[^}]*\}\s*$', '', md, flags=re.M)
    md = re.sub(r'^---\s*$', '', md, flags=re.M)
    return "<div class='fmops-api'></div>\n\n" + links.markdown(md.strip(), base)


# ----------------------------------------------------------------------------------------- rendering
def exporter():
    from nbconvert import HTMLExporter
    return HTMLExporter(extra_template_basedirs=[str(DOCS)], template_name='template')


_TEX = re.compile(r'(?<![\\$])\$[^$\s][^$\n]*\$|\$\$')


def render(page_nb, page:Page, all_pages:list[Page], note:str='') -> str:
    "The page's HTML: the notebook through the site template, with the page's sections listed under it in the nav."
    math = any(c.cell_type == 'markdown' and _TEX.search(c.source) for c in page_nb.cells)
    site = {'nav': nav_html(all_pages, page), 'math': math, 'note': note,
            'source': page.source.relative_to(ROOT).as_posix() if page.source else 'the code (generated)'}
    body, _ = exporter().from_notebook_node(page_nb, resources={'site': site, 'metadata': {'name': page.title}})
    title = f"<title>{html.escape(page.title)} — fmops_nb</title>"
    body = re.sub(r'<title>.*?</title>', title, body, count=1, flags=re.S)
    toc = ''.join(f"<li><a href=\"#{m[1]}\">{re.sub(r'<[^>]+>', '', m[2])}</a></li>" # the heading's text, no links
                  for m in re.finditer(r'<h2 id="([^"]+)">(.*?)<a class="anchor-link"', body))
    return body.replace('<!--toc-->', f"<ul class='toc'>{toc}</ul>" if toc else '', 1)


def build_page(args):
    "Execute and render one notebook page (in its own process); returns (slug, seconds, error or '')."
    page, all_pages, out, run_heavy = args
    t0 = time.time()
    try: nb, left_out, panels = execute(page.source, run_heavy, Localizer(out, page.slug))
    except RuntimeError as e: return page.slug, time.time() - t0, str(e)
    links = Links(all_pages, out)
    note = ('Cells marked heavy were not run in this build: their outputs are missing.'
            if any(v == 'heavy' for v in left_out.values()) else '')
    (out / page.file).write_text(render(page_notebook(nb, left_out, panels, links, page.source.parent), page,
                                        all_pages, note))
    return page.slug, time.time() - t0, ''


# -------------------------------------------------------------------------------- generated references
def _md_page(title:str, summary:str, parts:list[str]):
    from nbformat.v4 import new_markdown_cell, new_notebook
    return new_notebook(cells=[new_markdown_cell(f"# {title}\n\n> {summary}")] + [new_markdown_cell(p) for p in parts])


def templates_page():
    "Each report template with its parameters: `fmops report templates`, as a page."
    from fmops_nb.commands import templates, Templates
    from fmops_nb.core import Workspace
    with tempfile.TemporaryDirectory(prefix='fmops-docs-') as d: # the packaged templates only, no user's folder
        found = templates(Workspace(Path(d) / '.fmops')).found
    parts = ["Generated from the templates themselves by `fmops_nb.commands.templates` — what "
             "`fmops report templates` and `%fmops report templates` list. Run one with "
             "`fmops report run NAME -p PARAMETER VALUE` or `%fmops report run NAME ...`; see "
             "[Reports and schedules](guide_reports.html)."]
    import nbformat
    for name, path, params, err in found:
        nb = nbformat.read(str(path), as_version=4)
        intro = next((c.source for c in nb.cells if c.cell_type == 'markdown'), '')
        intro = re.sub(r'^#+ .*\n?', '', intro).strip()
        parts.append(f"## {name}\n\n{intro}\n\n<div class='fmops-reference'>"
                     f"{Templates([(name, Path('templates') / path.name, params, err)])._repr_html_()}</div>")
    return _md_page('Report templates', 'Each template in `templates/` with its parameters, types and defaults.', parts)


def spec_page():
    "Every fine-tune spec key: the data behind `%fmops help finetune`, as a page."
    from fmops_nb.finetune import spec_keys, SPEC_EXAMPLE
    from fmops_nb.html import table
    rows = spec_keys()
    keys = table('fmops-spec-keys', ['key', 'type', 'default', 'meaning'], rows)
    return _md_page('Fine-tune spec', 'Every key of a `%%fmops finetune` spec: its type, default and meaning.', [
        "Generated from `fmops_nb.finetune.spec_keys` — the same table `%fmops help finetune` and "
        "`fmops finetune --help` print. A spec is YAML: the body of a `%%fmops finetune` cell, or a file for "
        "`fmops finetune run SPEC`. See [the fine-tune workflow](guide_finetune.html).",
        f"## Keys\n\n<div class='fmops-reference'>{keys}</div>",
        f"## A complete spec\n\n```yaml\n%%fmops finetune\n{SPEC_EXAMPLE}```"])


def subcommands(p, prefix:str='fmops'):
    "(command line, parser) for `p` and every subcommand below it, depth first."
    import argparse
    yield prefix, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                if sub is not p: yield from subcommands(sub, f"{prefix} {name}")


def cli_anchor(command:str) -> str: return command.replace(' ', '-')


def cli_page():
    "Every `fmops` subcommand with its help, from the real parser."
    from fmops_nb.cli import parser
    cmds = list(subcommands(parser()))
    index = ''.join(f"<li><a href='#{cli_anchor(c)}'><code>{html.escape(c)}</code></a></li>" for c, _ in cmds[1:])
    parts = ["Generated from `fmops_nb.cli.parser` (the parser `fmops` itself uses), so it lists every subcommand "
             "there is. In a notebook the same commands are `%fmops ...` (`%fmops help`).",
             f"<ul class='fmops-cli-index'>{index}</ul>"]
    for c, p in cmds:
        level = '#' * min(2 + c.count(' ') - 1, 4) if c != 'fmops' else '##'
        parts.append(f"{level} {c}\n\n<pre class='fmops-cli-help'>{html.escape(p.format_help())}</pre>")
    return _md_page('Command line', 'Every `fmops` subcommand and its flags.', parts)


GENERATED = {'ref_templates': templates_page, 'ref_finetune_spec': spec_page, 'ref_cli': cli_page}


# ------------------------------------------------------------------------------------------------ links
_API_LINK = re.compile(r"""<a class=["']fmops-api-link["'] href=["']([^"'#]+)#([^"']+)["']>""")


def fix_api_links(site:Path):
    """Point each name linked by `Links.markdown` at an entry that exists: `Class.attr` without an entry of its own
    (a property, a private method) links to `Class`'s, a name without any to its module's page."""
    ids = {}
    def idset(page):
        if page not in ids:
            p = _Refs()
            if (site / page).exists(): p.feed((site / page).read_text())
            ids[page] = p.ids
        return ids[page]
    def fix(m):
        page, anchor = m[1], m[2]
        while anchor and anchor not in idset(page): anchor = anchor.rpartition('.')[0]
        return f'<a class="fmops-api-link" href="{page}{"#" + anchor if anchor else ""}">'
    for f in site.glob('*.html'):
        text = f.read_text()
        new = _API_LINK.sub(fix, text)
        if new != text: f.write_text(new)


class _Refs(HTMLParser):
    "The ids a page defines and the links it makes."
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids, self.refs = set(), []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ('id', 'name') if tag == 'a' else ('id',):
            if a.get(k): self.ids.add(a[k])
        for k in ('href', 'src'):
            if a.get(k) and not (tag == 'base'): self.refs.append((tag, a[k]))


@dataclass
class LinkReport:
    broken: list = field(default_factory=list) # (page, link, why)
    external: dict = field(default_factory=dict) # url -> pages
    checked: int = 0


def check_links(site:Path) -> LinkReport:
    "Every internal link and anchor in the HTML under `site` must resolve; external ones are only listed."
    parsed = {}
    for f in sorted(site.rglob('*.html')):
        p = _Refs(); p.feed(f.read_text(errors='replace')); parsed[f.resolve()] = p
    rep = LinkReport()
    for f, p in parsed.items():
        page = f.relative_to(site.resolve()).as_posix()
        for tag, ref in p.refs:
            parts = urlsplit(ref)
            if parts.scheme in ('http', 'https', 'ftp') or ref.startswith('//'):
                rep.external.setdefault(ref, []).append(page); continue
            if parts.scheme in ('data', 'mailto', 'javascript'): continue
            rep.checked += 1
            if parts.scheme or parts.netloc: rep.broken.append((page, ref, 'unknown scheme')); continue
            target = (f.parent / unquote(parts.path)).resolve() if parts.path else f
            if site.resolve() not in [target, *target.parents]:
                rep.broken.append((page, ref, 'points outside the site')); continue
            if target.is_dir(): target = target / 'index.html'
            if not target.exists(): rep.broken.append((page, ref, 'no such file')); continue
            if parts.fragment:
                ids = parsed.get(target).ids if target in parsed else None
                if ids is None: rep.broken.append((page, ref, 'anchor into a file that is not a page'))
                elif not {parts.fragment, unquote(parts.fragment)} & ids: # as written, or percent-decoded
                    rep.broken.append((page, ref, 'no such anchor'))
    return rep


def print_links(rep:LinkReport) -> bool:
    print(f"links: {rep.checked} internal checked, {len(rep.broken)} broken; {len(rep.external)} external (listed, "
          f"not fetched):")
    for url, where in sorted(rep.external.items()): print(f"  external {url}  ({len(where)} pages: {where[0]}...)")
    for page, ref, why in rep.broken: print(f"  BROKEN {page}: {ref} ({why})")
    return not rep.broken


# ------------------------------------------------------------------------------------------------- build
def static(out:Path):
    "The stylesheets: JupyterLab's (from the installed nbconvert, as its lab template uses them) and the site's."
    from nbconvert.exporters.templateexporter import TemplateExporter
    lab = next(Path(d) / 'lab' / 'static' for d in TemplateExporter().template_paths
               if (Path(d) / 'lab' / 'static' / 'index.css').exists())
    (out / 'static').mkdir(parents=True, exist_ok=True)
    shutil.copy(lab / 'index.css', out / 'static' / 'jupyterlab.css')
    for t in ('theme-light.css', 'theme-dark.css'): shutil.copy(lab / t, out / 'static' / t)
    shutil.copy(DOCS / 'site.css', out / 'static' / 'site.css')


def build(out:Path, jobs:int=2, run_heavy:bool=True, only:list[str]|None=None, keep_going:bool=False,
          log=print, record:Path|None=None) -> list[Page]:
    """Build the site into `out` (emptied first); returns its pages. A notebook that fails stops the build with a
    RuntimeError that shows the failing cell (`keep_going`: after building the others, naming every failure).
    `record`: a JSON file (outside the site) that names each executed notebook with its seconds and error ('' if none):
    the test suite's per-notebook tests read it instead of running every notebook a second time."""
    t0 = time.time()
    all_pages = pages()
    todo = [p for p in all_pages if not only or p.slug in only]
    if out.exists():
        if any(out.iterdir()) and not (out / 'static' / 'site.css').exists():
            raise RuntimeError(f"{out} is not empty and holds no site built by docs/build.py: it is not emptied. "
                               f"Pass a new or empty folder with --out.")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    static(out)
    links, failed = Links(all_pages, out), []
    for p in todo:
        if p.source is None:
            try: nb = GENERATED[p.slug]()
            except Exception as e: # the code it documents is broken
                failed.append(f"{p.file} failed: {type(e).__name__}: {e}\n{traceback.format_exc()}")
                if keep_going: continue
                raise RuntimeError(failed[0]) from e
            for c in nb.cells: c.source = links.markdown(c.source, ROOT)
            (out / p.file).write_text(render(nb, p, all_pages))
    nbs = sorted((p for p in todo if p.source), key=lambda p: -p.source.stat().st_size) # the longest first
    import nbconvert, execnb.shell, nbdev.processors, ipywidgets, fmops_nb # noqa: F401 (imported once, before the fork)
    # notebooks run side by side: one torch/BLAS thread each (two each on two busy cores ran several times slower)
    for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'): os.environ.setdefault(k, '1')
    # a notebook that does not choose its workspace, and W&B, write into a folder of the build's, not nbs/ or $HOME
    scratch = Path(tempfile.mkdtemp(prefix='fmops-docs-'))
    os.environ.setdefault('FMOPS_HOME', str(scratch / '.fmops'))
    os.environ.setdefault('WANDB_MODE', 'offline')
    for k, sub in [('WANDB_DIR', ''), ('WANDB_DATA_DIR', 'data'), ('WANDB_CACHE_DIR', 'cache'),
                   ('WANDB_CONFIG_DIR', 'config'), ('WANDB_ARTIFACT_DIR', 'artifacts')]:
        os.environ.setdefault(k, str(scratch / 'wandb' / sub))
    # and the notebooks' own temporary folders (each makes one, some hundreds of MB) go when the build ends
    (scratch / 'tmp').mkdir()
    saved = tempfile.tempdir, os.environ.get('TMPDIR')
    tempfile.tempdir = os.environ['TMPDIR'] = str(scratch / 'tmp')
    ctx = multiprocessing.get_context('fork')
    ran, by_slug = {}, {p.slug: p.source.name for p in nbs}
    try:
        with ctx.Pool(max(1, jobs), maxtasksperchild=1) as pool: # a fresh process per notebook: nothing leaks
            for slug, secs, err in pool.imap_unordered(build_page, [(p, all_pages, out, run_heavy) for p in nbs]):
                log(f"  {slug}.html  {secs:.1f}s{'  FAILED' if err else ''}")
                ran[slug] = {'notebook': by_slug[slug], 'seconds': round(secs, 1), 'error': err}
                if record: Path(record).write_text(json.dumps(ran, indent=1)) # as it goes: a stopped build says how far
                if err and not keep_going: pool.terminate(); raise RuntimeError(err)
                if err: failed.append(err)
    finally:
        tempfile.tempdir = saved[0]
        if saved[1] is None: os.environ.pop('TMPDIR', None)
        else: os.environ['TMPDIR'] = saved[1]
        shutil.rmtree(scratch, ignore_errors=True)
    fix_api_links(out)
    if failed: raise RuntimeError('\n\n'.join(failed) + f"\n{len(failed)} notebooks failed")
    log(f"built {len(todo)} pages into {out} in {time.time() - t0:.0f}s")
    return all_pages


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--out', default=str(ROOT / '_docs'), help='where to build the site (emptied first)')
    ap.add_argument('--jobs', type=int, default=min(2, os.cpu_count() or 1), help='notebooks executed at once')
    ap.add_argument('--skip-heavy', action='store_true', help='leave out the cells marked `#| heavy` (faster)')
    ap.add_argument('--only', nargs='*', help='build only these pages (slugs), e.g. drift cli')
    ap.add_argument('--keep-going', action='store_true', help='after a notebook fails, build the others, then fail')
    ap.add_argument('--record', metavar='FILE', help="write each executed notebook's seconds and error to FILE (JSON)")
    ap.add_argument('--check-links', nargs='?', const='', metavar='SITE',
                    help='check the links of the built site (or of SITE, without building)')
    a = ap.parse_args(argv)
    if a.check_links:
        return 0 if print_links(check_links(Path(a.check_links))) else 1
    try: build(Path(a.out), a.jobs, not a.skip_heavy, a.only, a.keep_going, record=a.record)
    except RuntimeError as e:
        print(e, file=sys.stderr)
        if a.keep_going and a.check_links is not None: print_links(check_links(Path(a.out)))
        return 1
    if a.check_links is not None: return 0 if print_links(check_links(Path(a.out))) else 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
