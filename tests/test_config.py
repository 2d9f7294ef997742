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
