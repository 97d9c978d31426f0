"""Settings of the analytics service (flags, or INKLOOP_ANALYTICS_* environment variables)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from inkloop.config import ServiceSettings
from inkloop.prompts import PrivacyPolicy
from inkloop_analytics.outcomes import OutcomeRules

DEV_PROMPT_SALT = "inkloop-dev-salt"


class AnalyticsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INKLOOP_ANALYTICS_")

    port: int = Field(50053, ge=0, le=65535, description="gRPC port.")
    metrics_port: int = Field(9093, ge=0, le=65535, description="Prometheus /metrics port.")
    clickhouse_url: str = Field(
        "",
        description="clickhouse://user:password@host:9000/db (server) or chdb://PATH (embedded); "
        "empty = chdb://<data-dir>/clickhouse.",
    )
    clickhouse_cluster: str = Field(
        "",
        pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$",
        description="Name of the ClickHouse cluster (remote_servers) the database lives on: tables are "
        "created ON CLUSTER, replicated per shard, behind Distributed tables; empty = a single node.",
    )
    # Ingest: batching, spool and backpressure.
    batch_rows: int = Field(
        10_000, ge=1, description="Pending rows that trigger an insert at once (else after flush_interval_s)."
    )
    flush_interval_s: float = Field(0.2, gt=0, le=60, description="Longest wait before pending rows are written.")
    max_pending_rows: int = Field(200_000, ge=1, description="Rows waiting to be written before ingest waits.")
    spool_dir: Path | None = Field(None, description="Spool directory; empty = <data-dir>/spool.")
    spool_max_bytes: int = Field(1024**3, ge=1024, description="Spool size above which ingest waits (backpressure).")
    backpressure_timeout_s: float = Field(
        5.0, ge=0, description="How long an ingest call waits for room before RESOURCE_EXHAUSTED."
    )
    retry_interval_s: float = Field(1.0, gt=0, description="Pause between retries of ClickHouse (migrations, replay).")
    recent_ids: int = Field(1_000_000, ge=0, description="Event ids remembered in memory to spot duplicates.")
    lookup_stored_ids: bool = Field(
        True, description="Also ask ClickHouse which ids of a batch are stored (duplicates older than memory)."
    )
    max_future_s: int = Field(86_400, ge=0, description="Events further in the future than this are rejected.")
    max_age_days: int = Field(365, ge=1, description="Events older than this are rejected.")
    # Privacy.
    privacy_store_text: Literal["none", "redacted"] = Field(
        "redacted", description="Keep a redacted prompt excerpt ('redacted') or no text at all ('none')."
    )
    privacy_max_chars: int = Field(64, ge=0, le=1024, description="Longest prompt excerpt kept, in characters.")
    privacy_salt: str = Field(
        DEV_PROMPT_SALT, description="Key of prompt and label hashes; must be set (and kept) in production."
    )
    retention_days: int = Field(400, ge=0, description="Days of events kept (0 = forever).")
    # Outcomes.
    outcome_regenerate_window_s: int = Field(
        1800,
        ge=1,
        le=7 * 24 * 3600,
        description="A new request of the same intent within this many seconds makes a request regenerated.",
    )
    outcome_max_intent_distance_bits: int = Field(
        12, ge=1, le=63, description="Prompt signatures at most this many bits apart are the same intent."
    )
    # Templates.
    template_prior_strength: float = Field(
        10.0,
        gt=0,
        le=1_000_000,
        description="Weight, in pseudo-requests, of the prior in a template's perceived-success estimate.",
    )
    # Alerts.
    alert_rules_file: Path | None = Field(None, description="YAML or JSON alert rules, added to the defaults.")
    alert_interval_s: float = Field(60.0, gt=0, description="Seconds between alert evaluations.")

    @model_validator(mode="after")
    def _rules_file_exists(self) -> AnalyticsSettings:
        if self.alert_rules_file is not None and not self.alert_rules_file.is_file():
            raise ValueError(f"alert_rules_file {self.alert_rules_file} does not exist")
        return self

    @model_validator(mode="after")
    def _cluster_needs_a_server(self) -> AnalyticsSettings:
        if self.clickhouse_cluster and not self.clickhouse_url.startswith(("clickhouse://", "clickhouses://")):
            raise ValueError("clickhouse_cluster needs a clickhouse:// server in clickhouse_url (chDB is one process)")
        return self

    def resolved_clickhouse_url(self) -> str:
        return self.clickhouse_url or f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    def outcome_rules(self) -> OutcomeRules:
        return OutcomeRules(self.outcome_regenerate_window_s, self.outcome_max_intent_distance_bits)

    def resolved_spool_dir(self) -> Path:
        return self.spool_dir or self.data_dir / "spool"

    def privacy_policy(self) -> PrivacyPolicy:
        return PrivacyPolicy(
            store_text=self.privacy_store_text, max_chars=self.privacy_max_chars, salt=self.privacy_salt
        )
