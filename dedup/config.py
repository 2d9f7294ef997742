"""One typed config tree, loaded once at the process edge (TOML file, environment, flags).

Precedence: the TOML file (or the packaged default spaces), then ``DEDUP_AUTH_TOKENS``, then
explicit overrides (``section__field=value``; a ``None`` override sets the field to None, e.g.
``server__metrics_port=None`` turns the metrics endpoint off). Every input bound of DESIGN
invariant 6 lives in ``Limits``; every index decision in ``IndexPlan``, which the service and
``dedup-build`` both read.
"""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dedup.errors import InvalidArgument, LimitExceeded
from dedup.types import ROLES, Role


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Strict):
    """Every input is bounded (DESIGN invariant 6)."""

    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 50_000_000  # width * height; larger is a decompression bomb
    max_image_side: int = 20_000
    max_text_chars: int = 20_000
    max_batch_items: int = 64
    max_top_k: int = 100
    max_page_size: int = 1000  # seeds per ListSeeds page
    max_page_bytes: int = 8 << 20  # a ListSeeds page ends early past this many record bytes
    # Decoded pixels held at once by every request in flight together (bytes); an item waits
    # for room (up to its deadline) and is refused with RESOURCE_EXHAUSTED past it.
    max_decode_bytes: int = 2 << 30
    max_decode_wait_s: float = 10.0
    max_message_bytes: int = 64 * 1024 * 1024
    # Free-text fields of writes, kept in the op log and the seed record.
    max_reason_chars: int = 1000
    max_note_chars: int = 4000
    max_source_chars: int = 512

    def check_text(self, field: str, value: str) -> None:
        """Refuse a free-text field (``reason``, ``note``, ``source``) over its limit."""
        limit = getattr(self, f"max_{field}_chars")
        if not isinstance(value, str):
            raise InvalidArgument(f"{field} must be a string")
        if len(value) > limit:
            raise LimitExceeded(f"{field} of {len(value)} characters",
                                limit=f"max_{field}_chars={limit}")

    def check_batch(self, n: int) -> None:
        """Refuse an empty call or one over max_batch_items."""
        if n == 0:
            raise InvalidArgument("no items given")
        if n > self.max_batch_items:
            raise LimitExceeded(f"{n} items in one call",
                                limit=f"max_batch_items={self.max_batch_items}")

    def check_top_k(self, k: int) -> None:
        """Refuse k < 1 or over max_top_k."""
        if k < 1:
            raise InvalidArgument(f"top_k must be >= 1, got {k}")
        if k > self.max_top_k:
            raise LimitExceeded(f"top_k={k}", limit=f"max_top_k={self.max_top_k}")


    def check_page_size(self, n: int) -> None:
        """Refuse a ListSeeds page size outside 1..max_page_size."""
        if not 1 <= n <= self.max_page_size:
            raise InvalidArgument(f"page size must be in 1..{self.max_page_size}, got {n}")


class IndexPlan(_Strict):
    """How a space's index is built and placed; the service and dedup-build read the same plan.

    ``factory`` is a FAISS factory string or ``auto`` (exact search below 100k float vectors
    or 1M binary codes, IVF above). A factory that needs training is trained only from vectors
    already in LMDB (at start-up or by dedup-build); until then the space serves from an exact
    index, so a write never waits on (or fails in) training.
    """

    factory: str = "auto"
    # "auto" (the default): one shard per GPU FAISS may use, one on a CPU (whose cores already
    # search one shard together); resolved when the config is read.
    n_shards: int = Field(default=1, ge=1, le=256)
    nprobe: int | None = Field(default=None, ge=1)  # None: 1/16 of the IVF lists, at least 16
    fp16: bool = False  # GPU shards: store vectors in float16 (half the memory)
    use_gpu: bool | None = None  # None: GPUs when FAISS sees them; False: CPU; True: must

    @model_validator(mode="before")
    @classmethod
    def _auto_shards(cls, data: Any) -> Any:
        """``n_shards = "auto"`` (or unset) -> a count that fits the hardware."""
        if isinstance(data, dict) and data.get("n_shards", "auto") == "auto":
            from dedup.index.shard import num_gpus  # FAISS: only once a plan is read

            gpus = 0 if data.get("use_gpu") is False else num_gpus()
            data = {**data, "n_shards": max(1, gpus)}
        return data


class VerifyConfig(_Strict):
    """The cascade's verification stage for one space (``dedup/verify``): candidates scoring
    at least ``band_low`` and below the threshold are re-scored against the seed's own content;
    at most ``max_candidates`` per lookup. ``geometric`` (images) fuses onto the space's scale;
    ``containment`` (texts) has its own calibrated ``threshold``."""

    method: Literal["geometric", "containment"] = "geometric"
    band_low: float
    max_candidates: int = Field(default=10, ge=1, le=64)
    mirror_mode: Literal["derived", "extract"] = "derived"
    threshold: float | None = None  # the verifier's own threshold (containment)
    # geometric: fused = similarity + weight * log1p(inliers) (inliers >= 12); calibrated
    weight: float | None = Field(default=None, gt=0, le=10)

    @model_validator(mode="after")
    def _own_threshold(self) -> "VerifyConfig":
        if self.method == "containment" and self.threshold is None:
            raise ValueError("verify.method 'containment' needs its own calibrated threshold")
        if self.method == "containment" and self.weight is not None:
            raise ValueError("verify.weight is the geometric fusion's; containment has none")
        if self.method == "geometric" and self.threshold is not None:
            raise ValueError("verify.method 'geometric' fuses onto the space's threshold; "
                             "drop verify.threshold")
        return self


class SpaceConfig(_Strict):
    """One representation space: which model, which index, which thresholds."""

    model: str  # embedder spec: "image:effnet-lite0", "text:minilm-l6", "clip:<arch>/<pretrained>"
    enabled: bool = True
    index: IndexPlan = Field(default_factory=IndexPlan)
    threshold: float = 0.9  # global similarity threshold for this space
    label_thresholds: dict[str, float] = Field(default_factory=dict)  # per-label overrides
    # For seeds added by a shared hash (a partner's PDQ), whose image was hashed elsewhere: the
    # threshold partners agree on (PDQ's customary Hamming distance 31 is 1 - 31/256).
    partner_threshold: float | None = None
    # Hash spaces with a quality score (PDQ): an image whose hash is below this quality is
    # neither indexed as a seed nor matched as a query (ThreatExchange's guidance: 50).
    min_quality: int | None = Field(default=None, ge=0, le=100)
    verify: VerifyConfig | None = None  # the cascade's verification of close calls
    # Queries (never seeds) are also described by parts of the picture (halves, quadrants) where
    # the embedder offers ``embed_regions``: a seed that is one panel of a collage is found by
    # its best part.
    query_regions: bool = False
    # "live" spaces decide verdicts; a "shadow" space is searched on every lookup and its
    # matches counted (metrics, logs) but never used in a verdict, until an admin promotes it.
    # Seeds are embedded in both. Once an admin promotes or rolls back, the store's role wins.
    role: Literal["live", "shadow"] = "live"
    replaces: str | None = None  # the live space that promoting this one takes the place of

    @model_validator(mode="before")
    @classmethod
    def _flat_index_keys(cls, data: Any) -> Any:
        """Accept the older flat keys (index_factory, n_shards, nprobe) as the index plan."""
        if isinstance(data, dict) and {"index_factory", "n_shards", "nprobe"} & data.keys():
            data = dict(data)
            plan = dict(data.get("index") or {})
            for old, new in (("index_factory", "factory"), ("n_shards", "n_shards"),
                             ("nprobe", "nprobe")):
                if old in data:
                    plan.setdefault(new, data.pop(old))
            data["index"] = plan
        return data


class StoreConfig(_Strict):
    # LMDB map size: address space, not disk (the file grows as data arrives). Large enough that
    # growing, which must wait for every reader, practically never happens.
    map_size: int = 1 << 40
    keep_content: bool = True  # keep seed bytes so the builder can re-embed with a new model


class BatcherConfig(_Strict):
    enabled: bool = True
    max_batch: int = Field(default=32, ge=1)
    max_wait_ms: float = Field(default=3.0, ge=0)
    max_queue: int = Field(default=1024, ge=1)
    # Batches computing at once. One keeps the model's own threads busy without two batches
    # competing for the same cores, and keeps admitted latency within its bound. Two raise
    # throughput where single-threaded work (decoding, local-feature verification) is a large
    # share: tools/bench_service, 8 callers, 2 cores, demo bank: 18.3 -> 26.1 lookups/s, but
    # admission, which counts two batches as twice the speed, then let p99 reach 3.4x the
    # unloaded p99 at twice the capacity (tests/e2e/test_load.py). Raise it with GPUs.
    max_inflight: int = Field(default=1, ge=1)
    # Admission: how long an admitted lookup may be expected to wait for the work ahead of it,
    # from service times measured online; past it (or past the caller's deadline) a lookup is
    # refused at once with RESOURCE_EXHAUSTED and a retry hint. None: as long as its own items
    # take to serve, which keeps an admitted lookup within about twice its unloaded latency.
    max_queue_delay_ms: float | None = Field(default=None, ge=0)


class TlsConfig(_Strict):
    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None  # set -> mTLS: clients must present a cert signed by it


class MetricsConfig(_Strict):
    """Who may read the Prometheus endpoint: loopback only unless a host is configured, with
    optional TLS and HTTP basic auth (the password kept as its sha256 hex digest)."""

    host: str = "127.0.0.1"
    cert_file: str | None = None
    key_file: str | None = None
    basic_auth_user: str | None = None
    basic_auth_sha256: str | None = None


class TokenSpec(_Strict):
    """What a bearer token stands for: a role, and the name the audit trail records."""

    role: Role
    name: str = Field(default="", pattern=r"^([A-Za-z0-9][A-Za-z0-9._@+-]{0,63})?$")


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int | None = 9464  # None disables the Prometheus endpoint
    metrics: MetricsConfig = MetricsConfig()
    workers: int = 4  # threads for embedding and search
    grace_s: float = 10.0
    # Long-lived calls that need no token (health Watch, reflection streams) share this budget,
    # apart from the API's own bounds, so anonymous streams can never starve tokened calls.
    max_public_streams: int = Field(default=64, ge=1)
    max_streams_per_connection: int = Field(default=128, ge=1)
    # token -> role, or token -> {role, name}: ``{ "tok" = { role = "analyst", name = "alice" } }``.
    # A token without a name is recorded as ``<role>:<first 8 hex digits of its sha256>``.
    tokens: dict[str, Role | TokenSpec] = Field(default_factory=dict)
    allow_anonymous_reader: bool = False
    tls: TlsConfig = TlsConfig()


class Config(_Strict):
    data_dir: str = "./dedup-data"
    device: str | None = None  # None: cuda when present, else cpu
    spaces: dict[str, SpaceConfig] = Field(default_factory=dict)
    limits: Limits = Limits()
    store: StoreConfig = StoreConfig()
    batcher: BatcherConfig = BatcherConfig()
    server: ServerConfig = ServerConfig()
    demo: bool = False  # seed the demo bank on first start

    @field_validator("spaces")
    @classmethod
    def _space_names(cls, v: dict[str, SpaceConfig]) -> dict[str, SpaceConfig]:
        for name, space in v.items():
            if name != space.model.split("@", 1)[0]:
                raise ValueError(f"space {name!r} must be named after its model {space.model!r}")
        return v

    @property
    def enabled_spaces(self) -> dict[str, SpaceConfig]:
        return {name: s for name, s in self.spaces.items() if s.enabled}


def default_spaces() -> dict[str, SpaceConfig]:
    """The packaged, offline models with the thresholds dedup-eval calibrated (thresholds.toml)."""
    raw = tomllib.loads(resources.files("dedup").joinpath("thresholds.toml").read_text("utf-8"))
    return {name: SpaceConfig.model_validate(space) for name, space in raw["spaces"].items()}


def parse_tokens(spec: str) -> dict[str, str | dict[str, str]]:
    """``token:role[:name],...`` (the DEDUP_AUTH_TOKENS format) -> {token: role} for entries
    without a name, {token: {"role": role, "name": name}} for those with one."""
    out: dict[str, str | dict[str, str]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        head, sep, last = part.rpartition(":")
        if sep and head and last in ROLES:
            out[head] = last
            continue
        token, sep2, role = head.rpartition(":")
        if not (sep and sep2 and token and role in ROLES and last):
            raise InvalidArgument(
                f"bad token entry {part!r}: want token:{'|'.join(ROLES)}[:name]")
        out[token] = {"role": role, "name": last}
    return out


def load_config(path: str | Path | None = None, **overrides) -> Config:
    """Read TOML (or the built-in default), then environment, then explicit overrides."""
    raw: dict = {}
    if path is not None:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    if not raw.get("spaces"):
        raw["spaces"] = {k: v.model_dump() for k, v in default_spaces().items()}
    env_tokens = os.environ.get("DEDUP_AUTH_TOKENS")
    if env_tokens:
        server = dict(raw.get("server", {}))
        server["tokens"] = {**server.get("tokens", {}), **parse_tokens(env_tokens)}
        raw["server"] = server
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        if field:
            raw[section] = {**raw.get(section, {}), field: value}
        else:
            raw[key] = value
    try:
        return Config.model_validate(raw)
    except Exception as e:  # pydantic.ValidationError: one clear message for the operator
        raise InvalidArgument(f"invalid config: {e}") from e
