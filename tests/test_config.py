"""The config tree: overrides (None included), the one index plan, the one role table."""

from __future__ import annotations

import pytest

from dedup.cli import _parser, serve_config
from dedup.config import IndexPlan, load_config, parse_tokens
from dedup.errors import InvalidArgument
from dedup.types import ROLES


def test_a_none_override_takes_effect():
    assert load_config(None).server.metrics_port == 9464
    assert load_config(None, server__metrics_port=None).server.metrics_port is None
    assert load_config(None, device=None).device is None


def test_serve_flags_override_only_what_was_given():
    args = _parser().parse_args(["serve", "--no-metrics", "--port", "0"])
    config = serve_config(args)
    assert config.server.metrics_port is None and config.server.port == 0
    assert config.server.host == "127.0.0.1" and config.demo
    args = _parser().parse_args(["serve", "--metrics-port", "9999"])
    assert serve_config(args).server.metrics_port == 9999


def test_the_index_plan_is_one_nested_table_and_old_flat_keys_still_load(tmp_path):
    path = tmp_path / "dedup.toml"
    path.write_text("""
[spaces."pdq"]
model = "pdq"
index = { factory = "BIVF16", n_shards = 2, nprobe = 4, fp16 = true, use_gpu = false }

[spaces."text:minilm-l6"]
model = "text:minilm-l6"
index_factory = "HNSW32"
n_shards = 3
""")
    config = load_config(path)
    assert config.spaces["pdq"].index == IndexPlan(factory="BIVF16", n_shards=2, nprobe=4,
                                                   fp16=True, use_gpu=False)
    assert config.spaces["text:minilm-l6"].index == IndexPlan(factory="HNSW32", n_shards=3)


def test_bad_config_is_one_clear_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[spaces."pdq"]\nmodel = "pdq"\nindex = { n_shards = 0 }\n')
    with pytest.raises(InvalidArgument, match="invalid config"):
        load_config(path)
    with pytest.raises(InvalidArgument, match="reader|analyst|admin"):
        load_config(None, server__tokens={"t": "superuser"})


def test_roles_come_from_one_table():
    assert ROLES == ("reader", "analyst", "admin")
    assert parse_tokens("a:reader, b:admin") == {"a": "reader", "b": "admin"}
    with pytest.raises(InvalidArgument, match="reader|analyst|admin"):
        parse_tokens("c:root")


def test_tokens_take_a_name_in_toml_and_in_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text('[server]\ntokens = { "t1" = { role = "analyst", name = "alice" }, '
                    '"t2" = "reader" }\n')
    monkeypatch.setenv("DEDUP_AUTH_TOKENS", "t3:admin:root,t4:analyst,a:b:reader")
    tokens = load_config(path).server.tokens
    assert (tokens["t1"].role, tokens["t1"].name) == ("analyst", "alice")
    assert tokens["t2"] == "reader" and tokens["t4"] == "analyst"
    assert (tokens["t3"].role, tokens["t3"].name) == ("admin", "root")
    assert tokens["a:b"] == "reader"  # a token may hold ':' (the role is read from the right)
    with pytest.raises(InvalidArgument, match="token:reader"):
        parse_tokens("t5:root:alice")
    monkeypatch.setenv("DEDUP_AUTH_TOKENS", "t6:analyst:bad name!")
    with pytest.raises(InvalidArgument):
        load_config(path)


def test_free_text_limits_name_the_limit():
    from dedup.config import Limits
    from dedup.errors import LimitExceeded

    limits = Limits(max_reason_chars=10)
    limits.check_text("reason", "x" * 10)
    with pytest.raises(LimitExceeded, match="max_reason_chars=10"):
        limits.check_text("reason", "x" * 11)
    with pytest.raises(LimitExceeded, match="max_note_chars=4000"):
        limits.check_text("note", "x" * 4001)
