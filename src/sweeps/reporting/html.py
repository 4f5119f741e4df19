"""report.html: a sweep's report.md as one self-contained page that MLflow's artifact viewer shows in place.

MLflow renders a `.md` artifact as text, its images as bare links; an `.html` artifact it renders
as a page. This page embeds the plots (base64 PNG), makes the tables sortable (click a column
header) and stays readable at 1400 px. It is rendered from report.md itself, so the two never
disagree: only the Markdown that `report` writes is understood (headings, bullet lists, pipe
tables, images on their own line, `code`, **bold**, [links](url)).
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Iterable

IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)\)$")
# A backslash escape, a code span (fenced by a run of backticks), **bold**, [a link](url).
INLINE = re.compile(r"\\([!-/:-@\[-`{-~])|(?<!`)(`+)(?!`)(.+?)(?<!`)\2(?!`)|\*\*([^*]+)\*\*"
                    r"|\[([^\]]+)\]\(([^)\s]+)\)")

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
code { background: #f3f3f3; padding: 0 .25em; border-radius: 3px; font-size: 92%; }
.table { overflow-x: auto; max-height: 70vh; }
table { border-collapse: collapse; font-size: 13px; white-space: nowrap; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f6f6f6; cursor: pointer; position: sticky; top: 0; }
th:hover { background: #e8eefc; }
tr:nth-child(even) td { background: #fbfbfb; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; height: auto; }
figure { margin: .5em 0 1.5em; }
"""

# Click a header: sort its table by that column (numbers as numbers, blanks last); again: reverse.
SCRIPT = """
document.querySelectorAll('table').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.title = 'sort';
    th.addEventListener('click', function () {
      var body = table.tBodies[0], rows = Array.from(body.rows), up = th.dataset.up !== '1';
      function key(row) { var t = row.cells[col].textContent.trim(), n = parseFloat(t);
        return t === '' ? null : (isNaN(n) || !/^[-+0-9.]/.test(t) ? t : n); }
      rows.sort(function (a, b) { var x = key(a), y = key(b);
        if (x === null) return 1; if (y === null) return -1;
        if (typeof x !== typeof y) { x = String(x); y = String(y); }
        return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1); });
      rows.forEach(function (r) { body.appendChild(r); });
      th.dataset.up = up ? '1' : '0';
    });
  });
});
"""


def write(folder: Path, figures: Iterable[str]) -> Path:
    """report.html next to report.md in `folder`, with the images report.md shows embedded: only
    those among `figures`, the names of the files the report drew in `folder`."""
    markdown = (folder / "report.md").read_text()
    page = render(markdown, folder, figures)
    path = folder / "report.html"
    path.write_text(page)
    return path


def render(markdown: str, folder: Path, figures: Iterable[str] = ()) -> str:
    """The page for `markdown`; images are read from `folder`, those named in `figures` only."""
    figures = frozenset(figures)
    lines = markdown.splitlines()
    title = next((line[2:].strip() for line in lines if line.startswith("# ")), "sweep report")
    body, i = [], 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            body.append(_table(block))
            continue
        if line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            body.append("<ul>" + "".join(items) + "</ul>")
            continue
        body.append(_line(line.strip(), folder, figures))
        i += 1
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(_plain(title))}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(b for b in body if b)
            + f"\n<script>{SCRIPT}</script>\n</body></html>\n")


def _line(line: str, folder: Path, figures: frozenset[str]) -> str:
    if not line:
        return ""
    heading = re.match(r"^(#{1,4}) (.*)$", line)
    if heading:
        level = len(heading.group(1))
        return f"<h{level}>{_inline(heading.group(2))}</h{level}>"
    image = IMAGE.match(line)
    if image:
        return _figure(image.group("alt"), image.group("src"), folder, figures)
    return f"<p>{_inline(line)}</p>"


def _figure(alt: str, name: str, folder: Path, figures: frozenset[str]) -> str:
    """A figure the report drew, embedded; anything else named by an image line stays text."""
    if name not in figures or Path(name).name != name or name in (".", ".."):
        return f"<p>{html.escape(f'![{alt}]({name})')}</p>"  # as typed: neither read nor a link
    path = folder / name
    if path.is_symlink() or not path.is_file():
        return f"<p><em>{html.escape(alt)}: {html.escape(name)} is missing</em></p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(alt)}</figcaption></figure>")


def _table(rows: list[str]) -> str:
    cells = [_cells(row) for row in rows if not re.fullmatch(r"\|[\s:|-]*\|?", row.strip())]  # drop |---|
    if not cells:
        return ""
    head = "".join(f"<th>{_inline(c)}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in cells[1:])
    return f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _cells(row: str) -> list[str]:
    inner = row.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [c.strip() for c in re.split(r"(?<!\\)\|", inner)]  # `\|` stays: _inline reads the escape


def _inline(text: str) -> str:
    """Escape, then backslash escapes, `code`, **bold** and [links](url) (http(s) and relative links only)."""
    out, last = [], 0
    for match in INLINE.finditer(text):
        out.append(html.escape(text[last:match.start()]))
        escaped, _, code, bold, label, url = match.groups()
        if escaped is not None:
            out.append(html.escape(escaped))
        elif code is not None:
            if code.startswith(" ") and code.endswith(" ") and code.strip():
                code = code[1:-1]  # CommonMark: one space each side is padding
            out.append(f"<code>{html.escape(code)}</code>")
        elif bold is not None:
            out.append(f"<strong>{html.escape(bold)}</strong>")
        elif re.match(r"^(https?://\S+|(?!//)[\w./#-]+)$", url):  # web or relative; not //host, javascript:
            out.append(f'<a href="{html.escape(url)}">{html.escape(label)}</a>')
        else:
            out.append(html.escape(match.group(0)))
        last = match.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


def _plain(text: str) -> str:
    return text.replace("`", "")
