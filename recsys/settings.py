"""The one settings object: every configurable value, read from ``RECSYS_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    return Path.home() / ".recsys"


class Settings(BaseSettings):
    """Platform settings. Each field is read from ``RECSYS_<FIELD NAME>`` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Folder for the default SQLite database, downloads and artifacts.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means sqlite:///<data_dir>/recsys.db.",
    )
    artifact_dir: Path | None = Field(
        default=None, description="Model registry folder; default <data_dir>/artifacts."
    )
    cache_dir: Path | None = Field(
        default=None, description="Download cache for public datasets; default <data_dir>/cache."
    )
    ingest_batch_size: int = Field(
        default=100_000, ge=1, description="Rows per committed batch when ingesting."
    )
    api_key: SecretStr | None = Field(
        default=None, description="Key required in X-API-Key by write and admin endpoints."
    )
    host: str = Field(default="127.0.0.1", description="Address `recsys serve` binds.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port `recsys serve` binds.")
    workers: int = Field(default=1, ge=1, description="Worker processes of `recsys serve`.")
    reload_poll_seconds: float = Field(
        default=10.0,
        ge=0,
        description="How often the service checks for a newly promoted version (0 disables).",
    )
    exact_index_max_items: int = Field(
        default=100_000,
        ge=1,
        description="Catalogues up to this size use an exact FAISS index; larger ones use HNSW.",
    )
    min_index_recall: float = Field(
        default=0.95, gt=0, le=1, description="Recall@10 an approximate index must reach."
    )
    fold_in_cache_size: int = Field(
        default=10_000,
        ge=0,
        description="Folded-in vectors of users with new feedback the service keeps per worker "
        "(least recently used dropped; 0 disables the cache).",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins browsers may call the API from (JSON list, e.g. "
        '["https://shop.example"]; ["*"] for any); empty disables CORS.',
    )
    log_level: str = Field(default="INFO", description="Logging level.")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Log lines as timestamped text, or one JSON object per line (with the request id).",
    )
    lock_stale_seconds: float = Field(
        default=12 * 3600,
        gt=0,
        description="A named database lock held this long is stale and may be taken over "
        "(a lock whose process is gone on this host is taken over at once).",
    )
    validation_users: int = Field(
        default=1_000,
        ge=0,
        description="Users ranked by the validation metric after each training epoch (early "
        "stopping): a seeded sample when more hold validation items, the same users every epoch; "
        "0 ranks all of them. At 5M interactions (62k items) 1,000 users cost about 0.15x of an iALS "
        "sweep; ranking every user cost 3x.",
    )
    metric_users: int = Field(
        default=10_000,
        ge=0,
        description="Users ranked by a fit's final validation metrics (the figures stored with the "
        "version and the promotion gate against popularity): a seeded sample when more hold "
        "validation items; 0 ranks all of them. Ranking all 160k users of a 25M log against 62k "
        "items cost more than the training; 10,000 users measure nDCG@10 to about 0.003.",
    )
    tf_threads: int = Field(
        default=0,
        ge=0,
        description="Threads TensorFlow uses inside one operation while training (0: one per core).",
    )
    ray_num_cpus: int = Field(
        default=0,
        ge=0,
        description="CPUs of the Ray that `--engine ray` starts on this machine without --address "
        "(0: every core).",
    )
    ray_object_store_mb: int = Field(
        default=0,
        ge=0,
        description="Object store of the Ray that `--engine ray` starts on this machine without "
        "--address, in MB (0: Ray's default, 30% of the memory).",
    )

    default_model: str = Field(
        default="ials-lowrank",
        description="Model trained by `recsys train` without --model, `recsys quickstart` and a first "
        "pipeline run (the iALS + low-rank autoencoder blend: the best embedding model on both "
        "MovieLens sets, docs/benchmarks.md; beyond its max_items, 20,000, it fits iALS alone).",
    )
    promotion_tolerance: float = Field(
        default=0.01,
        ge=0,
        description="The retraining pipeline promotes a candidate whose temporal nDCG@10 is at most "
        "this much below production's.",
    )
    retrain_full_change_ratio: float = Field(
        default=0.5,
        gt=0,
        description="Retrain from scratch instead of warm-starting when new interactions exceed this "
        "share of those production was trained on.",
    )
    pipeline_tune_trials: int = Field(
        default=10,
        ge=0,
        description="Trials of the retraining pipeline's bounded tuning step (0: never tune). It runs "
        "when the data changed a lot: no production version yet, or new interactions above "
        "RECSYS_RETRAIN_FULL_CHANGE_RATIO of those production was trained on (`recsys pipeline run "
        "--tune/--no-tune` overrides the rule).",
    )
    pipeline_tune_seconds: float = Field(
        default=900.0,
        gt=0,
        description="Time budget of the pipeline's tuning step in seconds: no trial starts after it.",
    )
    pipeline_score_k: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="When above 0, the retraining pipeline writes every user's top k to the database.",
    )
    service_urls: list[str] = Field(
        default_factory=list,
        description="Base URLs of running services the pipeline asks to reload "
        '(JSON list, e.g. ["http://127.0.0.1:8000"]).',
    )

    # --- input rules: every door that stores interactions applies them (recsys.ingest.validation)
    interaction_value_min: float = Field(
        default=0.0,
        description="Smallest accepted interaction value. Implicit-feedback models (iALS and the "
        "default blend) cannot train on negative values; lower it (or set a kind's range) only for "
        "explicit models.",
    )
    interaction_value_max: float = Field(
        default=1e6,
        description="Largest accepted interaction value (huge values overflow the models' float32).",
    )
    interaction_value_bounds: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description='Value range per kind, overriding the two above (JSON, e.g. {"rating": [0.5, 5]}).',
    )
    timestamp_min: int = Field(
        default=0, description="Earliest accepted event time, epoch seconds (default 1970-01-01)."
    )
    timestamp_max_future_seconds: int = Field(
        default=86_400,
        ge=0,
        description="Latest accepted event time: this many seconds after now (clock skew allowance).",
    )
    duplicate_policy: Literal["update", "keep-first", "reject"] = Field(
        default="update",
        description="An event with the key (user, item, kind, timestamp) of a stored or earlier one but "
        "another value: update replaces the value, keep-first keeps the old one, reject rejects the "
        "new row. Each case is counted and reported.",
    )
    database_connect_timeout_seconds: int = Field(
        default=5, ge=1, description="Seconds to wait for a new database connection."
    )
    request_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Seconds the service waits for the database on a request (statement timeout on "
        "PostgreSQL, busy timeout on SQLite); past it the client gets 503.",
    )

    @model_validator(mode="after")
    def _check_input_rules(self) -> Settings:
        ranges = {"default": (self.interaction_value_min, self.interaction_value_max)}
        ranges.update(self.interaction_value_bounds)
        for kind, (low, high) in ranges.items():
            if not low <= high:
                raise ValueError(f"value range of {kind!r} is empty: {low} > {high}")
        return self

    @model_validator(mode="after")
    def _fill_derived_paths(self) -> Settings:
        self.data_dir = self.data_dir.expanduser()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'recsys.db'}"
        if self.artifact_dir is None:
            self.artifact_dir = self.data_dir / "artifacts"
        if self.cache_dir is None:
            self.cache_dir = self.data_dir / "cache"
        return self

    @property
    def artifacts(self) -> Path:
        assert self.artifact_dir is not None  # filled by the validator
        return self.artifact_dir

    @property
    def downloads(self) -> Path:
        assert self.cache_dir is not None  # filled by the validator
        return self.cache_dir


@lru_cache
def get_settings() -> Settings:
    """Settings read once per process; tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()
