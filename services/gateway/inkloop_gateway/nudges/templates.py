"""Prompt templates: patterns with named `{slot}`s that the page suggests and requests name by id.

Two sources, one list per tenant: the catalog shipped in `catalog.json` (ids `catalog.*`, read-only,
the same for every tenant) and the tenant's own templates, managed through the admin API and kept in
one shared document per tenant. A request that names a template carries its id onto its events, so
analytics can tell which templates lead to images users keep; the id must be one the tenant has.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from inkloop import errors
from inkloop.errors import FieldViolation, InvalidArgument
from inkloop.prompts import language_class
from inkloop_gateway.nudges.documents import DocumentStore

CATALOG_PREFIX = "catalog."
LANGUAGE_CLASSES = ("zh", "en", "mixed")
MAX_TENANT_TEMPLATES = 200
MAX_PATTERN_CHARS = 2000
_ID = re.compile(r"^[a-z0-9._-]{1,64}$")
_SLOT = re.compile(r"\{([a-z_][a-z0-9_]{0,31})\}")
_BRACE = re.compile(r"[{}]")


@dataclass(frozen=True)
class Template:
    id: str
    name: str
    language_class: str
    pattern: str
    category: str = ""
    builtin: bool = False
    slots: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "slots", tuple(dict.fromkeys(_SLOT.findall(self.pattern))))

    def to_json(self) -> dict[str, str]:
        return {
            "id": self.id,
            "name": self.name,
            "language_class": self.language_class,
            "pattern": self.pattern,
            "category": self.category,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], *, builtin: bool = False) -> Template:
        return cls(
            id=str(data["id"]),
            name=str(data["name"]),
            language_class=str(data["language_class"]),
            pattern=str(data["pattern"]),
            category=str(data.get("category", "")),
            builtin=builtin,
        )


def pattern_language(pattern: str) -> str:
    """The language class of the pattern's own text (slot names are not part of the prompt)."""
    return language_class(_SLOT.sub("", pattern))


def template_problems(template: Template, where: str = "template") -> list[FieldViolation]:
    """What is wrong with a template, field by field (catalog entries obey the same rules)."""
    problems = []
    if not _ID.match(template.id):
        problems.append(FieldViolation(f"{where}.id", "must be 1-64 characters of a-z 0-9 . _ -"))
    if not 1 <= len(template.name) <= 64:
        problems.append(FieldViolation(f"{where}.name", "must be 1-64 characters"))
    if template.language_class not in LANGUAGE_CLASSES:
        problems.append(FieldViolation(f"{where}.language_class", f"must be one of {', '.join(LANGUAGE_CLASSES)}"))
    if not 1 <= len(template.pattern) <= MAX_PATTERN_CHARS:
        problems.append(FieldViolation(f"{where}.pattern", f"must be 1-{MAX_PATTERN_CHARS} characters"))
    elif _BRACE.search(_SLOT.sub("", template.pattern)):
        problems.append(FieldViolation(f"{where}.pattern", "braces only around slot names: {a_z_0_9}"))
    elif template.language_class in LANGUAGE_CLASSES and pattern_language(template.pattern) != template.language_class:
        problems.append(
            FieldViolation(
                f"{where}.language_class",
                f"the pattern reads as {pattern_language(template.pattern)!r}, not {template.language_class!r}",
            )
        )
    if len(template.category) > 64:
        problems.append(FieldViolation(f"{where}.category", "at most 64 characters"))
    return problems


@cache
def catalog() -> tuple[Template, ...]:
    """The shipped starter templates, by id."""
    text = resources.files("inkloop_gateway.nudges").joinpath("catalog.json").read_text(encoding="utf-8")
    templates = tuple(sorted((Template.from_json(item, builtin=True) for item in json.loads(text)), key=_by_id))
    problems = [problem for template in templates for problem in template_problems(template, template.id)]
    if problems or any(not template.id.startswith(CATALOG_PREFIX) for template in templates):
        raise RuntimeError(f"the shipped template catalog is invalid: {problems}")
    return templates


def _by_id(template: Template) -> str:
    return template.id


class TemplateBook:
    """Each tenant's templates: the catalog, then the tenant's own."""

    def __init__(self, documents: DocumentStore) -> None:
        self.documents = documents

    async def list(self, tenant_id: str) -> list[Template]:
        return [*catalog(), *sorted((await self._own(tenant_id)).values(), key=_by_id)]

    async def get(self, tenant_id: str, template_id: str) -> Template:
        for template in catalog():
            if template.id == template_id:
                return template
        own = (await self._own(tenant_id)).get(template_id)
        if own is None:
            raise errors.NotFound(f"tenant {tenant_id!r} has no template {template_id!r}")
        return own

    async def require(self, tenant_id: str, template_id: str, field_name: str = "template_id") -> None:
        """INVALID_ARGUMENT unless the tenant has this template (an empty id names none: fine)."""
        if not template_id:
            return
        try:
            await self.get(tenant_id, template_id)
        except errors.NotFound:
            raise InvalidArgument(field_name, f"no template {template_id!r}; see ListTemplates") from None

    async def put(self, tenant_id: str, template: Template) -> Template:
        problems = template_problems(template)
        if template.id.startswith(CATALOG_PREFIX):
            problems.append(FieldViolation("template.id", f"ids starting {CATALOG_PREFIX!r} are the catalog's"))
        if problems:
            raise InvalidArgument.of(problems)
        own = await self._own(tenant_id)
        if template.id not in own and len(own) >= MAX_TENANT_TEMPLATES:
            raise errors.FailedPrecondition(f"a tenant may keep at most {MAX_TENANT_TEMPLATES} templates")
        stored = Template(template.id, template.name, template.language_class, template.pattern, template.category)
        own[stored.id] = stored
        await self._save(tenant_id, own)
        return stored

    async def delete(self, tenant_id: str, template_id: str) -> None:
        if template_id.startswith(CATALOG_PREFIX):
            raise errors.FailedPrecondition(f"{template_id!r} is a catalog template and cannot be deleted")
        own = await self._own(tenant_id)
        if own.pop(template_id, None) is None:
            raise errors.NotFound(f"tenant {tenant_id!r} has no template {template_id!r}")
        await self._save(tenant_id, own)

    async def _own(self, tenant_id: str) -> dict[str, Template]:
        stored = await self.documents.get(f"templates:{tenant_id}") or []
        return {item["id"]: Template.from_json(item) for item in stored}

    async def _save(self, tenant_id: str, own: dict[str, Template]) -> None:
        await self.documents.put(f"templates:{tenant_id}", [template.to_json() for template in own.values()])
