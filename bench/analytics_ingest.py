"""Ingest throughput through the analytics service vs a raw clickhouse-driver bulk insert of the same rows.

    .venv/bin/python bench/analytics_ingest.py [--events 200000] [--batch 5000] [--streams 2]

Both run in the same process against one private clickhouse-server (18.16), into fresh databases.
Service: gRPC IngestStream on port 0 (client in this process too), validation, duplicate lookup,
batched writer. Raw: the rows the service would write, `INSERT … VALUES` in 50k-row chunks.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import clickhouse_driver
import grpc

from harness.clickhouse import ClickHouseServer, database_url, fresh_database
from inkloop.prompts import PrivacyPolicy
from inkloop.rpc.server import start_server
from inkloop.v1 import analytics_pb2 as pb
from inkloop.v1 import analytics_pb2_grpc
from inkloop_analytics.migrations import migrate
from inkloop_analytics.server import AnalyticsApp
from inkloop_analytics.settings import AnalyticsSettings
from inkloop_analytics.tables import BACKEND_COLUMNS, FRONTEND_COLUMNS
from inkloop_analytics.validation import Limits, backend_row, frontend_row

LOOKUP_STORED_IDS = "--no-lookup" not in sys.argv
NOW = datetime.now(UTC).replace(microsecond=0)
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"


def make_requests(events: int, batch: int) -> list[pb.IngestRequest]:
    requests = []
    for start in range(0, events, batch):
        request = pb.IngestRequest(batch_id=str(start))
        for number in range(start, min(start + batch, events)):
            seconds = int((NOW - timedelta(seconds=number % 3600)).timestamp())
            if number % 2:
                event = request.frontend.add(
                    event_id=str(uuid.uuid4()),
                    tenant_id="t1",
                    visitor_id=f"v{number // 8}",
                    session_id=f"s{number // 8}",
                    page_url="https://inkloop.test/create?ref=home",
                    user_agent=UA,
                    language="zh-CN",
                    screen="1920x1080",
                    type=pb.FRONTEND_EVENT_TYPE_TRACK_EVENT,
                    category="generate",
                    action="click",
                    label="style:anime",
                    request_id=f"r{number}",
                )
                event.client_time.seconds = seconds
            else:
                event = request.backend.add(
                    event_id=str(uuid.uuid4()),
                    tenant_id="t1",
                    user_id=f"u{number // 8}",
                    request_id=f"r{number}",
                    job_id=f"j{number}",
                    type=pb.BACKEND_EVENT_TYPE_REQUESTED,
                    variant="A",
                    kind=1,
                    width=1024,
                    height=1024,
                    steps=30,
                    true_cfg_scale=4.0,
                    num_images=1,
                    seed=number,
                    latency_s=0.5,
                    prompt=pb.PromptFeatures(
                        length=40, language=pb.LANGUAGE_CLASS_ZH, hash="ab" * 32, redacted="一只猫"
                    ),
                )
                event.time.seconds = seconds
        requests.append(request)
    return requests


async def through_service(
    url: str, requests: list[pb.IngestRequest], streams: int, data_dir: Path, cluster: str = ""
) -> float:
    settings = AnalyticsSettings(
        clickhouse_url=url,
        clickhouse_cluster=cluster,
        data_dir=data_dir,
        privacy_salt="bench",
        lookup_stored_ids=LOOKUP_STORED_IDS,
    )
    app = AnalyticsApp(settings)
    server = await start_server(app, "127.0.0.1", 0, reflection_enabled=False)
    await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=[("grpc.max_send_message_length", -1)])
    stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)

    async def stream(share: list[pb.IngestRequest]) -> int:
        return sum([response.accepted async for response in stub.IngestStream(iter(share))])

    began = time.perf_counter()
    accepted = await asyncio.gather(*(stream(requests[index::streams]) for index in range(streams)))
    elapsed = time.perf_counter() - began
    await channel.close()
    await server.server.stop(0)
    await app.stop()
    assert sum(accepted) == sum(len(r.frontend) + len(r.backend) for r in requests), accepted
    return elapsed


def raw_insert(url: str, requests: list[pb.IngestRequest]) -> float:
    policy = PrivacyPolicy(salt="bench")
    limits = Limits()
    front, back = [], []
    for request in requests:
        for event in request.frontend:
            front.append(frontend_row(event, uuid.UUID(event.event_id), NOW, limits, policy))
        for backend_event in request.backend:
            back.append(backend_row(backend_event, uuid.UUID(backend_event.event_id), NOW, limits, policy))
    client = clickhouse_driver.Client.from_url(url)
    began = time.perf_counter()
    for table, columns, rows in (
        ("frontend_events", FRONTEND_COLUMNS, front),
        ("backend_events", BACKEND_COLUMNS, back),
    ):
        for start in range(0, len(rows), 50_000):
            client.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES", rows[start : start + 50_000])
    elapsed = time.perf_counter() - began
    client.disconnect()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000, help="Events per IngestRequest.")
    parser.add_argument("--streams", type=int, default=2, help="Concurrent IngestStream calls.")
    parser.add_argument("--no-lookup", action="store_true", help="Skip the duplicate lookup in ClickHouse.")
    arguments = parser.parse_args()
    requests = make_requests(arguments.events, arguments.batch)
    with (
        ClickHouseServer() as server,
        tempfile.TemporaryDirectory() as directory,
        fresh_database(server.url) as service_db,
        fresh_database(server.url) as raw_db,
    ):
        if True:
            migrate(raw_db)
            service_s = asyncio.run(
                through_service(
                    database_url(server.url, service_db.database), requests, arguments.streams, Path(directory)
                )
            )
            raw_s = raw_insert(database_url(server.url, raw_db.database), requests)
            [(stored,)] = service_db.query(
                "SELECT (SELECT uniqExact(event_id) FROM frontend_events)"
                " + (SELECT uniqExact(event_id) FROM backend_events)"
            )
    events = arguments.events
    print(f"events: {events:,} (half front-end, half back-end), {arguments.batch} per request")
    print(f"service (gRPC IngestStream x{arguments.streams}): {service_s:.2f} s = {events / service_s:,.0f} events/s")
    print(f"raw clickhouse-driver insert:           {raw_s:.2f} s = {events / raw_s:,.0f} events/s")
    print(f"service / raw: {raw_s / service_s:.2f}; stored distinct: {stored:,}")


if __name__ == "__main__":
    main()
