"""Bibliography labels in author-year form ("Bassi et al., 2024"), matching the book's author-year citations.

A pybtex label style and a formatting style that uses it, registered for sphinxcontrib-bibtex
(``bibtex_default_style: authoryear`` in ``_config.yml``).
"""
from __future__ import annotations

import re

from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle


def _plain(name: str) -> str:
    """A last name without BibTeX braces and accent commands ({\\"u} → u)."""
    name = re.sub(r"\\[a-zA-Z]+\s*|\\.", "", name)
    return name.replace("{", "").replace("}", "")


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        for entry in sorted_entries:
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            names = [_plain(" ".join(p.last_names)) for p in people]
            if not names:
                who = entry.key
            elif len(names) == 1:
                who = names[0]
            elif len(names) == 2:
                who = f"{names[0]} and {names[1]}"
            else:
                who = f"{names[0]} et al."
            yield f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearStyle(UnsrtStyle):
    default_label_style = AuthorYearLabels


register_plugin("pybtex.style.labels", "authoryear", AuthorYearLabels)
register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)


def setup(app):
    return {"parallel_read_safe": True, "parallel_write_safe": True}
