"""File-name templates with named fields: matching file names and rendering sibling names.

A template is a path relative to the images folder in which ``{name}`` is a field and
``[text]`` is literal text that may be absent:

- ``KiDS_DR4.0_{ra}_{dec}_{band}_sci.fits[.fz]`` matches
  ``KiDS_DR4.0_129.0_-0.5_r_sci.fits`` (``ra=129.0``, ``dec=-0.5``, ``band=r``) and its
  tile-compressed twin ``..._sci.fits.fz``;
- ``{tile}_{band}.fits`` is the layout of the mock survey;
- ``{band}/{tile}.fits`` puts each band in a folder of its own.

A field matches ``[^/]+?`` (any text without ``/``, as short as the rest allows), except
``band`` (``[^_/.]+``: no ``_``, ``/`` or ``.``), ``ra`` and ``dec`` (a signed decimal
number); ``{name:regex}`` gives another regular expression (without braces). A field named
twice must have the same value both times. Sibling templates (weight, flag maps) and the
tile-key template (``KIDS_{ra}_{dec}``) are rendered from the fields of the image's match.

Pure: no I/O (names are matched against lists the caller made).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass

NUMBER = r"[-+]?[0-9]+(?:\.[0-9]+)?"
FIELD_PATTERNS: Mapping[str, str] = {"band": r"[^_/.]+", "ra": NUMBER, "dec": NUMBER}
"""Regular expression of the fields with a meaning; any other field is ``[^/]+?``."""
OTHER_FIELD = r"[^/]+?"
_TOKEN = re.compile(r"\{(\w+)(?::([^{}]+))?\}|\[([^\[\]{}]*)\]")


class TemplateError(ValueError):
    """A template is malformed, or names a field its image template does not have."""


@dataclass(frozen=True)
class Template:
    """A parsed file-name template (see the module docstring)."""

    text: str
    """The template as written."""
    fields: tuple[str, ...]
    """Its field names, in order of first appearance."""
    optional: tuple[str, ...]
    """The literal texts of its ``[...]`` segments, in order."""
    regex: re.Pattern[str]
    """Full-match expression of a relative path (``/`` separated)."""

    @classmethod
    def parse(cls, text: str) -> Template:
        """Parse ``text``; a stray brace or bracket, or a bad field regex, is an error
        that shows the template."""
        pieces: list[str] = []
        fields: list[str] = []
        optional: list[str] = []
        pos = 0
        for token in _TOKEN.finditer(text):
            pieces.append(_literal(text[pos : token.start()], text))
            name, pattern, literal = token.groups()
            if name is not None:
                if name.startswith("_"):
                    raise TemplateError(f"template {text!r}: field names cannot start with _")
                if name in fields:
                    pieces.append(f"(?P={name})")
                else:
                    fields.append(name)
                    regex = pattern or FIELD_PATTERNS.get(name, OTHER_FIELD)
                    pieces.append(f"(?P<{name}>{regex})")
            else:
                pieces.append(f"(?P<_opt{len(optional)}>{re.escape(literal)})?")
                optional.append(literal)
            pos = token.end()
        pieces.append(_literal(text[pos:], text))
        try:
            regex = re.compile("".join(pieces))
        except re.error as err:
            raise TemplateError(f"template {text!r}: bad field expression: {err}") from None
        if not text or text.startswith("/"):
            raise TemplateError(f"template {text!r}: must be a path relative to the images folder")
        return cls(text=text, fields=tuple(fields), optional=tuple(optional), regex=regex)

    @property
    def depth(self) -> int:
        """Number of path components of the files it names."""
        return self.text.count("/") + 1

    def match(self, name: str) -> tuple[dict[str, str], tuple[bool, ...]] | None:
        """The fields of relative path ``name`` and which optional segments it has, or
        None when it does not match."""
        found = self.regex.fullmatch(name)
        if found is None:
            return None
        groups = found.groupdict()
        fields = {key: groups[key] for key in self.fields}
        present = tuple(groups[f"_opt{i}"] is not None for i in range(len(self.optional)))
        return fields, present

    def render(self, fields: Mapping[str, str], *, like: tuple[bool, ...] = ()) -> list[str]:
        """The names this template gives for ``fields``: one per choice of its optional
        segments, the choice ``like`` (the image's, where the counts agree) first, then
        with all segments absent, and so on.

        Raises
        ------
        TemplateError
            A field of the template is not in ``fields``.
        """
        missing = [name for name in self.fields if name not in fields]
        if missing:
            raise TemplateError(
                f"template {self.text!r}: field(s) {', '.join(missing)} not known here "
                f"(known: {', '.join(fields) or 'none'})"
            )
        choices = list(itertools.product((False, True), repeat=len(self.optional)))
        if len(like) == len(self.optional):
            choices.remove(like)
            choices.insert(0, like)
        names = []
        for choice in choices:
            optional = iter(choice)
            names.append(
                _TOKEN.sub(
                    lambda token, optional=optional: (
                        fields[token.group(1)]
                        if token.group(1) is not None
                        else (token.group(3) if next(optional) else "")
                    ),
                    self.text,
                )
            )
        return names


def _literal(text: str, template: str) -> str:
    if any(char in text for char in "{}[]"):
        raise TemplateError(f"template {template!r}: unbalanced brace or bracket in {text!r}")
    return re.escape(text)


@dataclass(frozen=True)
class TemplateMatch:
    """An image file found by a template, with its siblings."""

    name: str
    """Its path relative to the images folder."""
    band: str | None
    """From the ``{band}`` field (None: the template has none; the header decides)."""
    tile: str | None
    """From the tile-key template or the ``{tile}`` field (None: neither)."""
    weight: str | None
    """The weight map's relative path, where it exists."""
    flag: str | None
    """The flag map's relative path, where it exists."""


def match_templates(
    names: list[str],
    *,
    template: str,
    weight_template: str | None = None,
    flag_template: str | None = None,
    tile_template: str | None = None,
    source: str = "",
) -> list[TemplateMatch]:
    """The images among ``names`` that ``template`` matches, with their siblings.

    Files that the weight or flag template matches are never images themselves (so
    ``{tile}_{band}.fits`` does not take ``KIDS_1.0_2.0_r_wei.fits`` for band ``wei``).

    Parameters
    ----------
    names : list of str
        Relative paths (``/`` separated) of the files in the images folder.
    template, weight_template, flag_template : str
        Templates of the images and of their weight and flag maps.
    tile_template : str, optional
        Renders the tile key from the image's fields (``KIDS_{ra}_{dec}``).
    source : str
        The images folder, for messages.

    Returns
    -------
    list of TemplateMatch
        Sorted by name.

    Raises
    ------
    TemplateError
        Nothing matches (the message shows the template and one of the files that do
        exist), or a sibling or tile template names a field the image template lacks.
    """
    image = Template.parse(template)
    siblings = {
        kind: Template.parse(text)
        for kind, text in (("weight", weight_template), ("flag", flag_template))
        if text
    }
    tile = Template.parse(tile_template) if tile_template else None
    for kind, other in [*siblings.items(), ("tile", tile)]:
        if other is not None:
            unknown = [name for name in other.fields if name not in image.fields]
            if unknown:
                raise TemplateError(
                    f"{kind} template {other.text!r}: field(s) {', '.join(unknown)} are not "
                    f"in the image template {image.text!r}"
                )
    if tile is not None and tile.optional:
        raise TemplateError(f"tile template {tile.text!r}: cannot have [optional] parts")
    present = set(names)
    ancillary = {name for name in names for other in siblings.values() if other.match(name)}
    matches = []
    for name in sorted(names):
        if name in ancillary:
            continue
        found = image.match(name)
        if found is None:
            continue
        fields, like = found
        found_siblings = {}
        for kind, other in siblings.items():
            found_siblings[kind] = next(
                (cand for cand in other.render(fields, like=like) if cand in present), None
            )
        key = tile.render(fields)[0] if tile is not None else fields.get("tile")
        matches.append(
            TemplateMatch(
                name=name,
                band=fields.get("band"),
                tile=key,
                weight=found_siblings.get("weight"),
                flag=found_siblings.get("flag"),
            )
        )
    if not matches:
        example = next((name for name in sorted(names) if name not in ancillary), None)
        example = example or (sorted(names)[0] if names else None)
        there = f"e.g. {example!r} exists there" if example else "the folder holds no files"
        raise TemplateError(
            f"{source or 'images'}: no file matches the template {template!r} ({there})"
        )
    return matches


__all__ = ["FIELD_PATTERNS", "Template", "TemplateError", "TemplateMatch", "match_templates"]
