"""Open every page of the built book in headless Chromium and fail on what a reader would see broken.

    python tools/check_book.py [--html _build/html] [--out _build/check-book] [--chromium chromium]

Every HTML page under --html (``_static/`` aside) is served from a local HTTP server on 127.0.0.1 and loaded
at a 1280 px and at a 400 px wide viewport. A page fails on

``broken-image``  an ``<img>`` whose file is missing, or that has not loaded (``naturalWidth == 0``);
``broken-link``   an ``href`` to a local file or ``#anchor`` that does not exist, a local script or stylesheet
                  that is missing, or a local request of the page that answered 4xx/5xx or failed;
``raw-glue``      a ``{glue`` role left unrendered in the text;
``posixpath``     the text ``PosixPath(`` (a returned path echoed by a cell);
``text-table``    an output or text block (``<pre>``, source code aside) whose lines form a table: ``|``
                  separators in one column on several lines, ``---+---`` rules, or columns aligned by spaces;
                  tables must be HTML tables (a DataFrame, ``Styler`` or Markdown output);
``wide-figure``   an image rendered wider than its container or than the page's content column, or one drawn
                  so much wider than the column that the theme shrinks it below --min-scale (default 0.5) of its
                  size to fit (its text then reads at under half its size: 10 pt at 100 dpi below 7 px);
``math``          an equation MathJax did not typeset (its TeX, e.g. ``\\(``, ``$$`` or ``\\begin{``, is visible,
                  or MathJax shows an error), MathJax that did not load, or MathJax loaded from a CDN;
``heavy-image``   an image file over 300 kB;
``wide-equation`` a display equation wider than the content column: at a desktop width (>= 1000 px) always, at
                  a phone width when it is cut off instead of scrolling.

External hosts are unreachable to the browser (a host-resolver rule), so a page renders as it would offline:
MathJax must come from the book itself (tools/book.py stages a local copy, see `make mathjax`). Requests a
page makes to other hosts, and HTML tables (and, on a phone, display equations) wider than the content column that
scroll sideways, are listed as notes, which do not fail the check.

Writes a screenshot of every page at both widths (full page, ``<page>-1280.png`` and ``<page>-400.png``) and
the findings (``report.txt``, ``report.json``) to --out. Exit status: 0 when no page fails, 1 when some page
does, 2 when the check could not run (no HTML, no Chromium).

The page analysis is split so that it can be tested without a browser: ``static_findings`` reads a page's
HTML (links, image files, raw text, text tables), ``snapshot_findings`` reads what ``PAGE_SCRIPT`` measured in
the browser (image loading and widths, MathJax's state and any TeX left visible).
"""
from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
VIEWPORTS = (1280, 400)
DESKTOP = 1000  # viewports at least this wide are desktops: every display equation must fit their column
VIEWPORT_HEIGHT = 900
SCREENSHOT_MAX_HEIGHT = 16000  # css px; taller pages are cut (Chromium's capture limit is about 16k)
MAX_IMAGE_BYTES = 300_000  # an image file of the built book is at most this large
MIN_SCALE = 0.5  # a figure shown at less than this fraction of its drawn width is too wide for the column
CHECKS = ("broken-image", "broken-link", "raw-glue", "posixpath", "text-table", "wide-figure", "math",
          "wide-equation", "heavy-image")

# highlight languages whose <pre> blocks are source code, not printed output (aligned comments are not tables)
CODE_LANGUAGES = {"python", "python3", "ipython", "ipython3", "py", "pycon", "bash", "sh", "shell", "console",
                  "shell-session", "yaml", "toml", "json", "javascript", "js", "make", "makefile", "c", "cpp",
                  "text/x-python", "ini", "cfg", "diff", "html", "xml", "css", "latex", "tex", "bibtex"}
SKIP_SCHEMES = ("http:", "https:", "mailto:", "javascript:", "data:", "ftp:", "tel:")


@dataclass
class Finding:
    page: str                        # path relative to the HTML root
    check: str                       # one of CHECKS
    message: str
    viewports: list[int] = field(default_factory=list)  # empty: seen in the HTML itself

    def line(self) -> str:
        where = f" [{', '.join(f'{v} px' for v in self.viewports)}]" if self.viewports else ""
        return f"{self.check}{where}: {self.message}"


# ---------------------------------------------------------------------------------------------------------
# text tables


_GAP = re.compile(r"\S(\s{2,})(?=\S)")
_RULE = re.compile(r"^\s*[-=+|: ]*-{3,}[-=+|: ]*$")


def _aligned_columns(lines: list[str], min_lines: int = 3) -> int | None:
    """Largest number of consecutive lines that share a column boundary made by a gap of 2+ spaces.

    A boundary is where a field starts after such a gap (left-aligned column) or where a field ends before it
    or at the end of the line (right-aligned column)."""
    best = None
    block: list[str] = []
    for line in [*lines, ""]:
        if line.strip():
            block.append(line.rstrip())
            continue
        if len(block) >= min_lines:
            counts: dict[tuple[str, int], int] = {}
            for text in block:
                gaps = list(_GAP.finditer(text))
                if not gaps:
                    continue
                marks = {("start", m.end(1)) for m in gaps} | {("end", m.start(1)) for m in gaps}
                marks.add(("end", len(text)))
                for mark in marks:
                    counts[mark] = counts.get(mark, 0) + 1
            # the line end alone is no column: it counts only with a gap on the same lines (see marks above)
            shared = max(counts.values(), default=0)
            if shared >= min_lines:
                best = max(best or 0, shared)
        block = []
    return best


def text_table_reason(text: str) -> str | None:
    """Why the text of a <pre> block reads as a table, or None."""
    lines = text.expandtabs(8).splitlines()
    piped = [line for line in lines if "|" in line and not _RULE.match(line)]
    if len(piped) >= 3:
        columns: dict[int, int] = {}
        for line in piped:
            for pos in {m.start() for m in re.finditer(r"\|", line)}:
                columns[pos] = columns.get(pos, 0) + 1
        if max(columns.values()) >= 3:
            return f"{len(piped)} lines with '|' separators in one column"
    rules = [line for line in lines if _RULE.match(line) and len(line.strip()) >= 5]
    if rules and len(piped) >= 2:
        return f"'|' separated lines under a '{rules[0].strip()[:20]}' rule"
    aligned = _aligned_columns(lines)
    if aligned:
        return f"{aligned} lines with space-aligned columns"
    return None


# ---------------------------------------------------------------------------------------------------------
# static analysis of one page's HTML


def _soup(html: str):
    from bs4 import BeautifulSoup

    return BeautifulSoup(html, "html.parser")


@functools.lru_cache(maxsize=256)
def _anchors(path: Path) -> frozenset[str]:
    soup = _soup(path.read_text(encoding="utf-8", errors="replace"))
    ids = [t["id"] for t in soup.find_all(id=True)]
    return frozenset(ids + [t["name"] for t in soup.find_all("a", attrs={"name": True})])


def _resolve(page: Path, url: str, root: Path) -> tuple[Path | None, str]:
    """(local file the URL names or None when it leaves the root, fragment)."""
    parts = urlsplit(url)
    target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
    if parts.path.endswith("/") or target.is_dir():
        target = target / "index.html"
    try:
        target.relative_to(root.resolve())
    except ValueError:
        return None, parts.fragment
    return target, unquote(parts.fragment)


def _is_local(url: str | None) -> bool:
    return bool(url) and not url.lower().startswith(SKIP_SCHEMES) and not url.startswith("//")


def _context(text: str, start: int, width: int = 50) -> str:
    snippet = text[max(0, start - width // 2): start + width].replace("\n", " ")
    return " ".join(snippet.split())


def _section(node) -> str:
    """The id of the nearest enclosing section (or the nearest earlier heading), to find a block again."""
    for parent in node.parents:
        if parent.name == "section" and parent.get("id"):
            return "#" + parent["id"]
    return ""


def _code_block(pre) -> bool:
    for parent in pre.parents:
        classes = parent.get("class") or []
        if "cell_input" in classes:
            return True
        for c in classes:
            if c.startswith("highlight-") and c[len("highlight-"):].lower() in CODE_LANGUAGES:
                return True
    return False


def static_findings(html: str, page: str, root: Path | None = None) -> list[Finding]:
    """Findings visible in a page's HTML: links and image files (when ``root``, the HTML root, is given),
    raw ``{glue``, ``PosixPath(``, text tables and a MathJax script loaded from another host."""
    soup = _soup(html)
    out: list[Finding] = []

    def add(check, message):
        out.append(Finding(page, check, message))

    for script in soup.find_all("script", src=True):
        src = script["src"]
        if re.search(r"mathjax|tex-(mml-)?(chtml|svg)", src, re.I) and not _is_local(src):
            add("math", f"MathJax is loaded from another host ({src}); serve the book's local copy")
    if root is not None:
        path = (root / page).resolve()
        for img in soup.find_all("img"):
            src = img.get("src")
            if _is_local(src):
                target, _ = _resolve(path, src, root)
                if target is None or not target.is_file():
                    add("broken-image", f"<img src={src!r}>: no such file")
                elif target.stat().st_size > MAX_IMAGE_BYTES:
                    add("heavy-image", f"<img src={src!r}> {_section(img)} is {target.stat().st_size / 1e3:.0f} kB "
                                       f"(at most {MAX_IMAGE_BYTES / 1e3:.0f} kB: a phone loads every figure); draw it "
                                       "smaller (figsize, fewer panels) or at a lower dpi")
        assets = [(t.get("src"), "script") for t in soup.find_all("script", src=True)]
        assets += [(t.get("href"), "stylesheet") for t in soup.find_all("link", href=True)
                   if "stylesheet" in (t.get("rel") or [])]
        for url, kind in assets:
            if _is_local(url):
                target, _ = _resolve(path, url, root)
                if target is None or not target.is_file():
                    add("broken-link", f"{kind} {url!r}: no such file")
        seen = set()
        for a in soup.find_all("a", href=True):
            href = a["href"].strip()
            if not _is_local(href) or href == "#" or href in seen:
                continue
            seen.add(href)
            target, fragment = _resolve(path, href, root)
            label = " ".join(a.get_text().split())[:40]
            if target is None or not target.is_file():
                add("broken-link", f"href={href!r} ({label!r}): no such file")
            elif fragment and target.suffix == ".html" and fragment not in _anchors(target):
                add("broken-link", f"href={href!r} ({label!r}): no id {fragment!r} in {target.name}")

    for tag in soup(["script", "style", "template"]):
        tag.decompose()
    text = soup.get_text()
    # a raw role is {glue}`…` or {glue:text}`…` (code such as glue=f"{glued}" is not one)
    for needle, pattern, check in (("{glue", r"\{glue(:[a-z]+)?\}", "raw-glue"),
                                   ("PosixPath(", re.escape("PosixPath("), "posixpath")):
        for m in re.finditer(pattern, text):
            add(check, f"{needle!r} in the text: …{_context(text, m.start())}…")
    for i, pre in enumerate(soup.find_all("pre")):
        if _code_block(pre):
            continue
        block = pre.get_text()
        reason = text_table_reason(block)
        if reason:
            first = next((line.strip() for line in block.splitlines() if line.strip()), "")[:70]
            add("text-table", f"<pre> block {i} {_section(pre)} is a text table ({reason}), "
                              f"first line {first!r}; render it as an HTML table")
    return out


# ---------------------------------------------------------------------------------------------------------
# what the browser measures (PAGE_SCRIPT) and how it is read (snapshot_findings)

PAGE_SCRIPT = r"""
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const images = [...document.images];
  for (const img of images) if (img.loading === 'lazy') img.loading = 'eager';
  await Promise.all(images.map(img => img.complete ? null : new Promise(r => {
    img.addEventListener('load', r, {once: true}); img.addEventListener('error', r, {once: true});
    setTimeout(r, 10000);
  })));
  let mathjax = 'absent';
  const script = [...document.scripts].find(s => /mathjax|tex-(mml-)?(chtml|svg)/i.test(s.src || ''));
  if (script) {
    mathjax = 'not-loaded';
    const started = () => window.MathJax && MathJax.startup && MathJax.startup.promise;
    for (let t = 0; t < 3000 && !started(); t += 50) await sleep(50);
    if (started()) {
      mathjax = await Promise.race([
        MathJax.startup.promise.then(() => 'ok', e => 'error: ' + e),
        sleep(30000).then(() => 'timeout')]);
    }
  } else if (window.MathJax && MathJax.version) {
    mathjax = 'ok';
  }
  if (document.fonts) await Promise.race([document.fonts.ready, sleep(5000)]);
  const contentWidth = el => {
    const cs = getComputedStyle(el);
    return el.clientWidth - parseFloat(cs.paddingLeft || 0) - parseFloat(cs.paddingRight || 0);
  };
  // the text column: the theme's article (in document order <main> comes first, so ask for each in turn)
  const column = ['article.bd-article', 'article', '[role=main]', 'main'].map(q => document.querySelector(q))
    .find(el => el) || document.body;
  const columnWidth = contentWidth(column);
  const describe = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
      (el.classList.length ? '.' + [...el.classList].slice(0, 3).join('.') : '');
  const section = el => { const s = el.closest('section[id]'); return s ? '#' + s.id : ''; };
  const imgs = images.map(img => {
    let box = img.parentElement;
    const inline = el => /^(inline|contents)$/.test(getComputedStyle(el).display);
    while (box && box !== document.body && inline(box)) box = box.parentElement;
    box = box || document.body;
    const rect = img.getBoundingClientRect();
    return {src: img.getAttribute('src') || '', complete: img.complete, natural: img.naturalWidth,
            width: rect.width, visible: rect.width > 0 && rect.height > 0,
            container: contentWidth(box), container_name: describe(box),
            column: column.contains(img) ? columnWidth : null, section: section(img)};
  });
  const errors = [...document.querySelectorAll('mjx-merror, [data-mjx-error], .MathJax_Error, .merror')]
    .filter((el, i, all) => !el.closest('mjx-assistive-mml') && !all.some(o => o !== el && o.contains(el)))
    .map(el => ({message: el.getAttribute('data-mjx-error') || el.textContent.trim().slice(0, 120),
                 section: section(el)}));
  const skip = 'pre, code, kbd, samp, tt, script, style, textarea, noscript, template, mjx-container, .MathJax, '
    + '.highlight';
  // whole formulas first (one finding each), then stray delimiters, then $...$ holding TeX (\cmd, ^ or _)
  const tex = new RegExp([String.raw`\\\([\s\S]{0,400}?\\\)`, String.raw`\\\[[\s\S]{0,400}?\\\]`,
    String.raw`\$\$[\s\S]{0,400}?\$\$`, String.raw`\\begin\{[a-zA-Z*]+\}`, String.raw`\\[()[\]]`, String.raw`\$\$`,
    String.raw`\$[^$\s][^$\n]{0,200}?[\\^_][^$\n]{0,200}?\$`].join('|'), 'g');
  const leftovers = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    if (!parent || parent.closest(skip)) continue;
    for (const m of node.data.matchAll(tex)) {
      const text = m[0].length > 90 ? m[0].slice(0, 60) + ' … ' + m[0].slice(-25) : m[0];
      leftovers.push({text: text.replace(/\s+/g, ' ').trim(), section: section(parent)});
      if (leftovers.length > 50) break;
    }
  }
  const tables = [...document.querySelectorAll('table')].filter(t => column.contains(t))
    .map(t => ({width: t.scrollWidth, section: section(t)})).filter(t => t.width > columnWidth + 1);
  // display equations: the typeset formula (mjx-math) against the content column
  const equations = [...document.querySelectorAll('mjx-container[display="true"]')].filter(e => column.contains(e))
    .map(e => {
      const m = e.querySelector('mjx-math');
      const holder = e.closest('.math') || e.parentElement;
      const clip = holder ? getComputedStyle(holder).overflowX : 'visible';
      return {width: Math.round(m ? m.getBoundingClientRect().width : e.scrollWidth), section: section(e),
              scrolls: /auto|scroll/.test(clip) || /auto|scroll/.test(getComputedStyle(e).overflowX),
              tex: (e.querySelector('mjx-assistive-mml math') || {}).textContent?.slice(0, 60) || ''};
    }).filter(e => e.width > columnWidth + 1);
  return {tables, equations, mathjax, mathjax_version: (window.MathJax && MathJax.version) || null,
          math_elements: document.querySelectorAll('.math, mjx-container, .MathJax').length,
          column_width: columnWidth, viewport: window.innerWidth,
          scroll_width: document.documentElement.scrollWidth, imgs, errors, leftovers};
})()
"""


def snapshot_findings(page: str, viewport: int, snap: dict, min_scale: float = MIN_SCALE) -> list[Finding]:
    """Findings from what PAGE_SCRIPT measured on one page at one viewport width."""
    out: list[Finding] = []

    def add(check, message):
        out.append(Finding(page, check, message, [viewport]))

    for img in snap.get("imgs", []):
        name = img["src"] if len(img["src"]) < 90 else img["src"][:40] + "…" + img["src"][-40:]
        if img.get("natural", 0) == 0:
            state = "did not load" if img.get("complete") else "was still loading"
            add("broken-image", f"<img src={name!r}> {img.get('section', '')} {state} (naturalWidth 0)")
            continue
        if not img.get("visible"):
            continue
        limits = [(img["container"], f"its container {img.get('container_name', '')}")]
        if img.get("column") is not None:
            limits.append((img["column"], "the content column"))
        for limit, what in limits:
            if limit is not None and img["width"] > limit + 1:
                add("wide-figure", f"<img src={name!r}> {img.get('section', '')} is {img['width']:.0f} px wide, "
                                   f"{what} {limit:.0f} px")
                break
        else:
            scale = img["width"] / img["natural"]
            column = min(v for v, _ in limits if v is not None)
            if img["natural"] > column + 1 and scale < min_scale:
                add("wide-figure", f"<img src={name!r}> {img.get('section', '')} is drawn {img['natural']} px wide "
                                   f"and shrunk to {100 * scale:.0f}% ({img['width']:.0f} px) to fit the "
                                   f"{column:.0f} px column; draw it narrower (figsize) or split it")
    state = snap.get("mathjax", "absent")
    leftovers = snap.get("leftovers", [])
    if state != "ok" and (snap.get("math_elements") or leftovers or state != "absent"):
        # MathJax absent, not loaded, failed or timed out: every formula is TeX; one finding, a few examples
        examples = "; ".join(left["text"] for left in leftovers[:3])
        add("math", f"MathJax did not typeset the page ({state}): {len(leftovers)} formula(s) left as TeX"
                    + (f", e.g. {examples}" if examples else ""))
        leftovers = []
    for err in snap.get("errors", []):
        add("math", f"MathJax error {err.get('section', '')}: {err['message']!r}")
    for left in leftovers:
        add("math", f"TeX left as text {left.get('section', '')}: {left['text']}")
    for eq in snap.get("equations", []):
        # on a desktop a display equation must fit the column; on a phone one that scrolls is a note (see below)
        if viewport >= DESKTOP or not eq.get("scrolls"):
            how = "scrolls sideways" if eq.get("scrolls") else "is cut off at the right"
            add("wide-equation", f"display equation {eq.get('section', '')} is {eq['width']} px wide in the "
                                 f"{snap.get('column_width', 0):.0f} px column and {how}; break it over lines "
                                 f"(aligned) {eq.get('tex', '')!r}")
    return out


def merge(findings: list[Finding]) -> list[Finding]:
    """One finding per (page, check, message), with the viewports it was seen at."""
    merged: dict[tuple[str, str, str], Finding] = {}
    for f in findings:
        key = (f.page, f.check, " ".join(f.message.split()))
        if key in merged:
            merged[key].viewports = sorted(set(merged[key].viewports) | set(f.viewports), reverse=True)
        else:
            merged[key] = Finding(f.page, f.check, key[2], list(f.viewports))
    return list(merged.values())


# ---------------------------------------------------------------------------------------------------------
# Chromium over the DevTools protocol (--remote-debugging-pipe: JSON messages on fds 3 and 4, NUL-separated)

CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-extensions", "--disable-quic", "--mute-audio", "--hide-scrollbars",
    "--no-proxy-server", "--force-color-profile=srgb", "--disable-features=Translate,MediaRouter",
    # every host but the local server fails at once: the page renders as it would offline (no CDN)
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


class CDPError(RuntimeError):
    pass


def _above(fd: int, low: int) -> int:
    """A copy of fd numbered at least low (not inheritable); fd itself is closed."""
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, low)
    os.close(fd)
    return high


class Chromium:
    """A headless Chromium driven over the DevTools protocol through a pipe (no port, no websocket)."""

    def __init__(self, executable: str, log_path: Path):
        self.profile = tempfile.mkdtemp(prefix="check-book-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # the child's ends above fd 4, so that moving them onto 3 and 4 cannot clobber one with the other
        to_child_r, from_child_w = (_above(fd, 10) for fd in (to_child_r, from_child_w))

        def wire():  # in the child: its fd 3 reads our messages, its fd 4 writes its own (dup2 clears CLOEXEC)
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-pipe",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, close_fds=False, preexec_fn=wire)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.call("Browser.getVersion", timeout=30)

    def _read(self, timeout: float) -> dict | None:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_child], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise CDPError(f"Chromium exited (status {self.proc.poll()}); see {self.log.name}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._to_child, data):]
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            reply = self._read(max(left, 0)) if left > 0 else None
            if reply is None:
                raise CDPError(f"{method}: no answer in {timeout:.0f} s")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, session: str, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("method") == method and ev.get("sessionId") == session:
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ev = self._read(left)
            if ev is not None and "method" in ev:
                self.events.append(ev)

    def close(self):
        try:
            self.call("Browser.close", timeout=10)
        except (CDPError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(root: Path) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def find_chromium(name: str | None = None) -> str | None:
    for candidate in ([name] if name else []) + ["chromium", "chromium-browser", "google-chrome", "chrome"]:
        found = shutil.which(candidate) if candidate else None
        if found:
            return found
    return None


def render_pages(root: Path, pages: list[str], executable: str, shots: Path | None = None,
                 viewports=VIEWPORTS, min_scale: float = MIN_SCALE, log=print,
                 measured: dict | None = None) -> tuple[list[Finding], list[str]]:
    """Load every page at every viewport; (findings from PAGE_SCRIPT and failed requests, notes).

    ``measured``, when given, receives what PAGE_SCRIPT measured, by ``page@width``."""
    findings: list[Finding] = []
    notes: list[str] = []
    log_dir = shots or Path(tempfile.mkdtemp(prefix="check-book-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    browser = Chromium(executable, log_dir / "chromium.log")
    server = serve(root)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Network"):
            browser.call(f"{domain}.enable", session=session)
        for page in pages:
            times = []
            for width in viewports:
                start = time.monotonic()
                browser.call("Emulation.setDeviceMetricsOverride", {
                    "width": width, "height": VIEWPORT_HEIGHT, "deviceScaleFactor": 1, "mobile": False},
                    session=session)
                for attempt in range(3):  # a busy machine can let a late event of the last page interrupt this one
                    browser.events.clear()
                    browser.call("Page.navigate", {"url": base + page}, session=session)
                    loaded = browser.wait_event("Page.loadEventFired", session, timeout=60) is not None
                    try:
                        result = browser.call("Runtime.evaluate", {
                            "expression": PAGE_SCRIPT, "awaitPromise": True, "returnByValue": True}, session=session,
                            timeout=120)
                        break
                    except CDPError as err:
                        if "navigated or closed" not in str(err) or attempt == 2:
                            raise
                        log(f"[check-book] {page} @ {width} px: {err}; loading it again")
                if not loaded:
                    findings.append(Finding(page, "broken-link", "the page did not finish loading in 60 s", [width]))
                if "exceptionDetails" in result:
                    raise CDPError(f"{page}: the page script failed: {result['exceptionDetails']}")
                snap = result["result"]["value"]
                if measured is not None:
                    measured[f"{page}@{width}"] = snap
                findings += snapshot_findings(page, width, snap, min_scale)
                notes += [f"{page} @ {width} px: HTML table {t['section']} is {t['width']} px wide in the "
                          f"{snap['column_width']:.0f} px column (it scrolls sideways)" for t in snap.get("tables", [])]
                notes += [f"{page} @ {width} px: display equation {e['section']} is {e['width']} px wide in the "
                          f"{snap['column_width']:.0f} px column (it scrolls sideways)"
                          for e in snap.get("equations", []) if e.get("scrolls") and width < DESKTOP]
                findings += _request_findings(page, width, base, browser.events, notes)
                if shots is not None:
                    _screenshot(browser, session, width, shots / f"{page[:-5].replace('/', '-')}-{width}.png")
                times.append(f"{width} px {time.monotonic() - start:.1f} s")
            log(f"[check-book] {page}: {', '.join(times)}")
    finally:
        server.shutdown()
        browser.close()
    return findings, sorted(set(notes))


def _request_findings(page: str, width: int, base: str, events: list[dict], notes: list[str]) -> list[Finding]:
    out = []
    urls = {}
    favicon = base + "favicon.ico"  # the browser asks for it on its own; a book need not have one
    for ev in events:
        params = ev.get("params", {})
        if ev.get("method") == "Network.requestWillBeSent":
            urls[params["requestId"]] = params["request"]["url"]
        elif ev.get("method") == "Network.responseReceived":
            resp = params["response"]
            # images are reported as broken-image, from the <img> itself
            if (resp["url"].startswith(base) and resp.get("status", 200) >= 400 and params.get("type") != "Image"
                    and resp["url"] != favicon):
                out.append(Finding(page, "broken-link", f"request {resp['url'][len(base):]!r} answered "
                                                        f"{resp['status']}", [width]))
        elif ev.get("method") == "Network.loadingFailed":
            url = urls.get(params["requestId"], "?")
            if url.startswith(base):
                if not params.get("canceled") and url != favicon:
                    out.append(Finding(page, "broken-link", f"request {url[len(base):]!r} failed "
                                                            f"({params.get('errorText')})", [width]))
            elif url.startswith(("http:", "https:")):
                notes.append(f"{page}: requests another host (blocked here): {url}")
    return out


def _screenshot(browser: Chromium, session: str, width: int, path: Path):
    metrics = browser.call("Page.getLayoutMetrics", session=session)
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    height = int(min(max(size["height"], VIEWPORT_HEIGHT), SCREENSHOT_MAX_HEIGHT))
    shot = browser.call("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}}, session=session, timeout=120)
    path.write_bytes(base64.b64decode(shot["data"]))


# ---------------------------------------------------------------------------------------------------------


def book_pages(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html")
                  if p.relative_to(root).parts[0] not in ("_static", "_sources", "_images"))


def check(root: Path, out: Path | None, executable: str, min_scale: float = MIN_SCALE, log=print,
          measured: dict | None = None) -> tuple[list[Finding], list[str]]:
    """Every page of the book at root: (findings merged over viewports, notes)."""
    pages = book_pages(root)
    findings: list[Finding] = []
    for page in pages:
        findings += static_findings((root / page).read_text(encoding="utf-8", errors="replace"), page, root)
    rendered, notes = render_pages(root, pages, executable, out, min_scale=min_scale, log=log, measured=measured)
    return merge(findings + rendered), notes


def report(findings: list[Finding], pages: list[str], notes: list[str]) -> str:
    lines = []
    failing = sorted({f.page for f in findings})
    for page in failing:
        mine = [f for f in findings if f.page == page]
        counts = ", ".join(f"{c} {sum(f.check == c for f in mine)}" for c in CHECKS if any(f.check == c for f in mine))
        lines.append(f"FAIL {page} ({counts})")
        lines += [f"    {f.line()}" for f in sorted(mine, key=lambda f: CHECKS.index(f.check))]
    for page in pages:
        if page not in failing:
            lines.append(f"ok   {page}")
    if notes:
        lines.append("notes (do not fail the check):")
        lines += [f"    {n}" for n in notes]
    lines.append(f"[check-book] {len(failing)} of {len(pages)} pages fail, {len(findings)} finding(s)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html", help="the built book")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "check-book",
                        help="screenshots and report (emptied first)")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM"), help="browser executable")
    parser.add_argument("--min-scale", type=float, default=MIN_SCALE,
                        help="fail a figure shown at less than this fraction of its drawn width (0: never)")
    args = parser.parse_args(argv)
    root = args.html.resolve()
    if not (root / "index.html").is_file():
        print(f"[check-book] {root}/index.html is missing: build the book first (python tools/book.py build)")
        return 2
    executable = find_chromium(args.chromium)
    if executable is None:
        print("[check-book] no Chromium found (apt-get install chromium, or pass --chromium)")
        return 2
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    start = time.monotonic()
    measured: dict = {}
    findings, notes = check(root, args.out, executable, args.min_scale, measured=measured)
    pages = book_pages(root)
    text = report(findings, pages, notes)
    (args.out / "report.txt").write_text(text + "\n")
    (args.out / "report.json").write_text(json.dumps(
        {"pages": pages, "findings": [asdict(f) for f in findings], "notes": notes, "measured": measured}, indent=1))
    print(text)
    print(f"[check-book] {time.monotonic() - start:.0f} s; screenshots and report in {args.out}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
