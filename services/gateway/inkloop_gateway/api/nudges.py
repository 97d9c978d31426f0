"""The page's nudges: `GET /v1/web/templates` (prompt suggestions) and `GET /v1/web/experiments`.

Suggestions are the page tenant's templates of the prompt's language class as analytics ranks them
by perceived success, cached for a minute (every page load asks). While analytics cannot answer, the
page still gets templates, in catalog order, marked `ranked: false`. Assignments are the visitor's
arm of each running experiment, for the same visitor id the tracker's events get.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from aiohttp import web

from inkloop import errors
from inkloop.v1 import analytics_pb2
from inkloop.visitors import daily_visitor_id
from inkloop_gateway.api.analyst import AnalyticsClient
from inkloop_gateway.nudges.templates import LANGUAGE_CLASSES, Template

log = logging.getLogger(__name__)

SUGGESTIONS = 3
SUGGESTIONS_CACHE_S = 60.0
_SUGGESTION_TIMEOUT_S = 2.0


def _template_json(template: Template) -> dict[str, object]:
    return {
        "id": template.id,
        "name": template.name,
        "languageClass": template.language_class,
        "pattern": template.pattern,
        "slots": list(template.slots),
        "category": template.category,
    }


class PageNudges:
    def __init__(self, analytics: AnalyticsClient, *, tenant_id: str, visitor_secret: str) -> None:
        self.analytics = analytics
        self.tenant_id = tenant_id
        self.visitor_secret = visitor_secret
        self._suggested: dict[str, tuple[float, dict[str, object]]] = {}

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/web/templates", self.templates), web.get("/v1/web/experiments", self.experiments)]

    async def templates(self, request: web.Request) -> web.Response:
        language = request.query.get("language", "")
        if language not in LANGUAGE_CLASSES:
            raise errors.InvalidArgument("language", f"must be one of {', '.join(LANGUAGE_CLASSES)}")
        cached = self._suggested.get(language)
        if cached is None or time.monotonic() - cached[0] >= SUGGESTIONS_CACHE_S:
            cached = (time.monotonic(), await self._suggest(language))
            self._suggested[language] = cached
        return web.json_response(cached[1], headers={"Cache-Control": "no-store"})

    async def experiments(self, request: web.Request) -> web.Response:
        day = datetime.now(UTC).date()
        visitor_id = daily_visitor_id(
            request.remote or "", request.headers.get("User-Agent", ""), self.tenant_id, day, self.visitor_secret
        )
        assignments = await self.analytics.experiments.assignments(self.tenant_id, visitor_id)
        return web.json_response({"assignments": assignments}, headers={"Cache-Control": "no-store"})

    async def _suggest(self, language: str) -> dict[str, object]:
        candidates = [t for t in await self.analytics.templates.list(self.tenant_id) if t.language_class == language]
        by_id = {template.id: template for template in candidates}
        request = analytics_pb2.RecommendTemplatesRequest(
            tenant_id=self.tenant_id, language_class=language, template_ids=list(by_id), limit=SUGGESTIONS
        )
        try:
            reply = await self.analytics.recommend_templates(request, timeout_s=_SUGGESTION_TIMEOUT_S)
        except errors.InkloopError as error:
            log.info("template ranking unavailable, suggesting catalog order", extra={"reason": str(error)})
            return {"templates": [_template_json(t) for t in candidates[:SUGGESTIONS]], "ranked": False}
        ranked = [by_id[r.template_id] for r in reply.templates if r.template_id in by_id]
        return {"templates": [_template_json(t) for t in ranked[:SUGGESTIONS]], "ranked": True}
