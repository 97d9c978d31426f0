"""The analytics service's domain facade: ingest, queries and alerts over one database and spool.

Life cycle: `open()` starts the spool, writer and replayer at once, so ingest works (into the spool)
even while ClickHouse is down; `connect()` then retries until ClickHouse is reachable and migrated,
after which writes and queries go to it and the spool is replayed; `close()` flushes and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from inkloop.errors import InkloopError
from inkloop.spool import Spool
from inkloop.v1 import analytics_pb2
from inkloop_analytics import (
    adoption,
    alerts,
    correlation,
    discrepancy,
    experiments,
    funnel,
    insights,
    outcomes,
    retention,
    template_ranking,
    variants,
)
from inkloop_analytics.funnel import FunnelQuery, FunnelReport
from inkloop_analytics.ingest import IngestConfig, Ingestor, IngestResult
from inkloop_analytics.migrations import migrate
from inkloop_analytics.outcomes import Outcomes, OutcomesQuery, RetryLoops, RetryLoopsQuery
from inkloop_analytics.settings import AnalyticsSettings
from inkloop_analytics.storage import ClickHouse, QueryError, connect
from inkloop_analytics.store import EventStore
from inkloop_analytics.validation import Limits
from inkloop_analytics.writer import Writer, WriterConfig

log = logging.getLogger(__name__)

Result = TypeVar("Result")
RETENTION_INTERVAL_S = 3600.0
# Ingest keeps each batch's rows (tuples, UUIDs, lists) alive for the fraction of a second the batch is
# in flight. At Python's default first-generation threshold (700 allocations) they outlive two young
# collections and reach the oldest generation, whose collections walk every live object: about a
# quarter of the CPU of the ingest bench went there. With this threshold most batches die young.
GC_YOUNG_THRESHOLD = 20_000


class Analytics:
    def __init__(self, settings: AnalyticsSettings, clock: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self.clock = clock or (lambda: datetime.now(UTC))
        self.store = EventStore()
        self.spool = Spool(settings.resolved_spool_dir(), name="analytics-rows", max_bytes=settings.spool_max_bytes)
        self.writer = Writer(
            self.store,
            self.spool,
            WriterConfig(
                batch_rows=settings.batch_rows,
                flush_interval_s=settings.flush_interval_s,
                max_pending_rows=settings.max_pending_rows,
                backpressure_timeout_s=settings.backpressure_timeout_s,
                retry_interval_s=settings.retry_interval_s,
            ),
        )
        limits = Limits(max_future_s=settings.max_future_s, max_age_s=settings.max_age_days * 86_400)
        config = IngestConfig(
            policy=settings.privacy_policy(),
            limits=limits,
            recent_ids=settings.recent_ids,
            lookup_stored_ids=settings.lookup_stored_ids,
        )
        self.ingestor = Ingestor(self.store, self.writer, config, clock=self.clock)
        self.outcome_rules = settings.outcome_rules()
        self.alert_rules = alerts.load_rules(settings.alert_rules_file)
        self.evaluator = alerts.AlertEvaluator(self.alert_rules, self.outcome_rules)
        self._ch: ClickHouse | None = None
        self._lookups: ClickHouse | None = None
        self._background: asyncio.Task[None] | None = None

    async def open(self) -> None:
        young, *older = gc.get_threshold()
        if 0 < young < GC_YOUNG_THRESHOLD:  # a process-wide setting: only ever raised, never switched on
            gc.set_threshold(GC_YOUNG_THRESHOLD, *older)
        self.writer.start()

    async def connect(self) -> None:
        """Returns once ClickHouse is reachable and migrated; retries (logging why) until then."""
        url = self.settings.resolved_clickhouse_url()
        if url.startswith("chdb://"):
            (self.settings.data_dir / "clickhouse").mkdir(parents=True, exist_ok=True)
        while True:
            try:
                if self._ch is None:
                    self._ch = await asyncio.to_thread(connect, url, self.settings.clickhouse_cluster)
                applied = await asyncio.to_thread(migrate, self._ch)
                break
            except (InkloopError, QueryError) as error:
                log.warning("ClickHouse not ready, ingest goes to the spool; retrying: %s", error)
                await asyncio.sleep(self.settings.retry_interval_s)
        log.info("schema ready", extra={"applied_migrations": applied})
        # Duplicate lookups on their own connection: on a shared one each would wait for a running insert.
        self._lookups = self._ch.another_connection()
        self.store.attach(self._ch, self._lookups)
        self.writer.wake_replayer()
        self._background = asyncio.create_task(self._maintain())

    async def close(self) -> None:
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background
        await self.writer.stop()
        if self._lookups is not None and self._lookups is not self._ch:
            self._lookups.close()
        if self._ch is not None:
            self._ch.close()

    # Ingest.

    async def ingest(
        self,
        frontend: Sequence[analytics_pb2.FrontendEvent],
        backend: Sequence[analytics_pb2.BackendEvent],
        batch_id: str,
    ) -> IngestResult:
        return await self.ingestor.ingest(frontend, backend, batch_id)

    def ingest_stream(self, requests: AsyncIterable[analytics_pb2.IngestRequest]) -> AsyncIterator[IngestResult]:
        """One result per request, in order, each once durable; later requests are worked on meanwhile."""
        return self.ingestor.ingest_stream(requests)

    # Queries: checked first (bad input is INVALID_ARGUMENT even while ClickHouse is down), then run
    # in a worker thread so the event loop keeps serving ingest.

    async def funnel(self, query: funnel.FunnelQuery) -> list[funnel.FunnelSeries]:
        return await self._run(funnel.run, query)

    async def funnel_report(self, query: FunnelQuery) -> FunnelReport:
        """The series and the time to convert (what the Funnel RPC answers)."""
        return await self._run(funnel.report, query)

    async def funnel_correlation(self, query: correlation.CorrelationQuery) -> correlation.Correlation:
        return await self._run(correlation.run, query)

    async def discrepancy(self, query: discrepancy.DiscrepancyQuery) -> discrepancy.Discrepancy:
        return await self._run(discrepancy.run, query)

    async def prompt_insights(self, query: insights.PromptInsightsQuery) -> insights.PromptInsights:
        return await self._run(insights.run, query)

    async def feature_adoption(self, query: adoption.FeatureAdoptionQuery) -> adoption.Adoption:
        return await self._run(adoption.run, query)

    async def compare_variants(self, query: variants.CompareVariantsQuery) -> list[variants.VariantStats]:
        return await self._run(variants.run, query)

    async def outcomes(self, query: OutcomesQuery) -> Outcomes:
        return await self._run(outcomes.run, query)

    async def retry_loops(self, query: RetryLoopsQuery) -> RetryLoops:
        return await self._run(outcomes.retry_loops, query)

    async def recommend_templates(
        self, query: template_ranking.RecommendTemplatesQuery
    ) -> template_ranking.TemplateRanking:
        return await self._run(template_ranking.run, query)

    async def experiment_results(self, query: experiments.ExperimentQuery) -> experiments.ExperimentResults:
        return await self._run(experiments.run, query)

    async def list_alerts(self, query: alerts.ListAlertsQuery) -> list[alerts.Alert]:
        query.check()
        now = self.clock()
        return await asyncio.to_thread(alerts.list_alerts, self.store.ch, query, now)

    async def evaluate_alerts(self) -> list[alerts.Alert]:
        return await asyncio.to_thread(self.evaluator.evaluate, self.store.ch, self.clock())

    async def _run(self, run: Callable[[ClickHouse, Any], Result], query: Any) -> Result:
        query.check()
        return await asyncio.to_thread(run, self.store.ch, query)

    async def _maintain(self) -> None:
        """Alert evaluation every alert_interval_s; retention once an hour."""
        last_retention = 0.0
        while True:
            try:
                if time.monotonic() - last_retention >= RETENTION_INTERVAL_S:
                    await asyncio.to_thread(retention.apply, self.store.ch, self.settings.retention_days)
                    last_retention = time.monotonic()
                await self.evaluate_alerts()
            except Exception:  # a failed round must not end the schedule
                log.exception("alert evaluation or retention failed")
            await asyncio.sleep(self.settings.alert_interval_s)
