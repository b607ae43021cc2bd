"""The rules file of :class:`~pyro_acp.models.catalogs.ProceduralCatalog`: parsed and validated into tensors.

A malformed or inconsistent file is a ``ValueError`` that names the rule (``procedural rules: composition 'x'
order group 2 lists unknown section 'y'``). The default file, ``procedural_rules.json`` beside this module,
documents the format inside.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

DEFAULT_RULES_PATH = Path(__file__).with_name("procedural_rules.json")


def _fail(message: str) -> None:
    raise ValueError(f"procedural rules: {message}")


def _int_range(raw: dict, key: str) -> tuple[int, int]:
    value = raw.get(key)
    ok = (isinstance(value, list) and len(value) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in value))
    if not ok or not 1 <= value[0] <= value[1]:
        _fail(f"'{key}' must be a range [min, max] of integers with 1 <= min <= max, got {value!r}")
    return value[0], value[1]


@dataclass(frozen=True)
class CatalogRules:
    """Parsed, validated rules as tensors (S sections, C colours, Q compositions, G order groups)."""

    raw: dict
    colours: tuple[str, ...]
    section_names: tuple[str, ...]
    composition_names: tuple[str, ...]
    num_tokens: tuple[int, int]
    section_size: tuple[int, int]
    section_counts: Tensor  # (S, C) tokens of each colour
    section_tokens: Tensor  # (S, max size) colour index of each token, -1 padding
    group: Tensor  # (Q, S) order group of each section in each composition, -1 = not allowed
    composition_colours: Tensor  # (Q, C) colours of each composition

    @property
    def num_groups(self) -> int:
        return int(self.group.max()) + 1


def _parse_sections(raw: dict, colours: list[str], size_range: tuple[int, int]) -> dict[str, dict[str, int]]:
    sections = raw.get("sections")
    if not isinstance(sections, dict) or not sections:
        _fail("'sections' must be a non-empty object mapping section names to colour counts")
    for name, counts in sections.items():
        if not isinstance(counts, dict) or not counts:
            _fail(f"section '{name}' must map colours to token counts, got {counts!r}")
        for colour, count in counts.items():
            if colour not in colours:
                _fail(f"section '{name}' uses unknown colour '{colour}' (colours: {colours})")
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                _fail(f"section '{name}' has a non-positive or non-integer count {count!r} of '{colour}'")
        size = sum(counts.values())
        if not size_range[0] <= size <= size_range[1]:
            _fail(f"section '{name}' has {size} tokens, outside section_size {list(size_range)}")
    return sections


def _parse_composition(name: str, spec: Any, sections: dict, colours: list[str],
                       num_tokens: tuple[int, int]) -> tuple[list[str], dict[str, int]]:
    """(colours, {section: group}) of one composition, with its consistency checks."""
    if not isinstance(spec, dict) or "colours" not in spec or "order" not in spec:
        _fail(f"composition '{name}' must be an object with 'colours' and 'order'")
    comp_colours, order = spec["colours"], spec["order"]
    if not isinstance(comp_colours, list) or not comp_colours or len(set(comp_colours)) != len(comp_colours):
        _fail(f"composition '{name}' needs a non-empty list of distinct 'colours'")
    for colour in comp_colours:
        if colour not in colours:
            _fail(f"composition '{name}' uses unknown colour '{colour}'")
    if not isinstance(order, list) or not order:
        _fail(f"composition '{name}' needs a non-empty 'order' (a list of groups of section names)")
    groups: dict[str, int] = {}
    for g, members in enumerate(order):
        if not isinstance(members, list) or not members:
            _fail(f"composition '{name}' order group {g + 1} must be a non-empty list of section names")
        for section in members:
            if section not in sections:
                _fail(f"composition '{name}' order group {g + 1} lists unknown section '{section}'")
            if section in groups:
                _fail(f"composition '{name}' lists section '{section}' in two order groups "
                      f"({groups[section] + 1} and {g + 1})")
            groups[section] = g
    used = {colour for section in groups for colour in sections[section]}
    if used != set(comp_colours):
        _fail(f"composition '{name}' declares colours {sorted(comp_colours)} but its sections use {sorted(used)}")
    minimum = sum(min(sum(sections[s].values()) for s in members) for members in order)
    if minimum > num_tokens[1]:
        _fail(f"composition '{name}' needs at least {minimum} tokens (one section per order group) but "
              f"num_tokens allows at most {num_tokens[1]}")
    return comp_colours, groups


def parse_rules(raw: Any) -> CatalogRules:
    """Validate a rules dict; ValueError naming the offending rule for anything malformed or inconsistent."""
    if not isinstance(raw, dict):
        _fail(f"the rules must be a JSON object, got {type(raw).__name__}")
    for key in ("colours", "sections", "compositions", "num_tokens"):
        if key not in raw:
            _fail(f"missing key '{key}'")
    colours = raw["colours"]
    if (not isinstance(colours, list) or not colours or not all(isinstance(c, str) for c in colours)
            or len(set(colours)) != len(colours)):
        _fail(f"'colours' must be a non-empty list of distinct names, got {colours!r}")
    num_tokens = _int_range(raw, "num_tokens")
    section_size = _int_range(raw, "section_size") if "section_size" in raw else (1, num_tokens[1])
    sections = _parse_sections(raw, colours, section_size)
    compositions = raw["compositions"]
    if not isinstance(compositions, dict) or not compositions:
        _fail("'compositions' must be a non-empty object mapping names to rules")
    section_names = list(sections)
    parsed, seen = [], {}
    for name, spec in compositions.items():
        comp_colours, groups = _parse_composition(name, spec, sections, colours, num_tokens)
        key = frozenset(comp_colours)
        if key in seen:
            _fail(f"compositions '{seen[key]}' and '{name}' have the same colours, so a catalog's rules "
                  "would be ambiguous")
        seen[key] = name
        parsed.append((comp_colours, groups))
    counts = torch.tensor([[sections[s].get(c, 0) for c in colours] for s in section_names])
    max_size = int(counts.sum(1).max())
    tokens = torch.full((len(section_names), max_size), -1, dtype=torch.long)
    for i, s in enumerate(section_names):
        row = [colours.index(c) for c, n in sections[s].items() for _ in range(n)]
        tokens[i, : len(row)] = torch.tensor(row)
    group = torch.tensor([[groups.get(s, -1) for s in section_names] for _, groups in parsed])
    comp_colours = torch.tensor([[c in cc for c in colours] for cc, _ in parsed])
    return CatalogRules(raw=raw, colours=tuple(colours), section_names=tuple(section_names),
                        composition_names=tuple(compositions), num_tokens=num_tokens, section_size=section_size,
                        section_counts=counts, section_tokens=tokens, group=group, composition_colours=comp_colours)


def load_rules(rules: str | Path | dict | None = None) -> CatalogRules:
    """Rules from a dict, a JSON file path, or the shipped default (None)."""
    if rules is None:
        rules = DEFAULT_RULES_PATH
    if isinstance(rules, (str, Path)):
        path = Path(rules)
        if not path.is_file():
            raise ValueError(f"procedural rules file {str(path)!r} does not exist")
        try:
            rules = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"procedural rules file {str(path)!r} is not valid JSON: {err}") from err
    return parse_rules(rules)
