"""A net prototxt's sections kept between commands (prototxt_cache): the next load takes the
kept ones without the parser; an edited file, a damaged kept file or DATAPREP_CACHE=off
never give stale sections; what the parse said is said again."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from dataprep.train import prototxt, prototxt_cache

DEPLOY = """name: "tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 12 dim: 12 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "prob" type: "Softmax" bottom: "conv1" top: "prob" }
"""
V1 = """name: "old"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
layers { name: "ip" type: INNER_PRODUCT bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
"""


def _kept() -> list[Path]:
    return sorted((Path(os.environ["DATAPREP_CACHE"]) / "prototxt").glob("*.json"))


def test_the_next_load_takes_the_kept_sections(tmp_path, monkeypatch):
    path = tmp_path / "deploy.prototxt"
    path.write_text(DEPLOY)
    first = prototxt_cache.net_sections(path)
    assert first == prototxt.net_sections(path) and len(_kept()) == 1
    with monkeypatch.context() as m:
        m.setattr(prototxt, "net_sections", lambda p: pytest.fail(f"{p} parsed again"))
        assert prototxt_cache.net_sections(path) == first
    before = path.stat()
    path.write_text(DEPLOY.replace("num_output: 4", "num_output: 6"))  # edited: parsed anew,
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # its size and time as they were
    edited = prototxt_cache.net_sections(path)
    assert edited["net"][0]["num_output"] == 6
    assert len(_kept()) == 2


def test_what_the_parse_said_is_said_again(tmp_path, caplog):
    path = tmp_path / "old.prototxt"
    path.write_text(V1)
    said = []
    for _ in range(2):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="dataprep"):
            sections = prototxt_cache.net_sections(path)
        said.append([(r.levelno, r.name, r.getMessage()) for r in caplog.records])
    assert said[0] == said[1] and "upgraded from the pre-2015 'layers' form" in said[0][0][2]
    assert sections["net"][0]["type"] == "InnerProduct"


def test_a_damaged_kept_file_is_parsed_again(tmp_path):
    path = tmp_path / "deploy.prototxt"
    path.write_text(DEPLOY)
    first = prototxt_cache.net_sections(path)
    (kept,) = _kept()
    damages = ["{not json", '{"sections": 1}', "[]", '{"sections": 1, "said": []}']
    damages += ['{"sections": {}, "said": [[20]]}', '{"sections": {}, "said": [["INFO", 3]]}']
    for damage in damages:
        kept.write_text(damage)
        assert prototxt_cache.net_sections(path) == first
        assert kept.read_text() != damage  # kept sound again


def test_off_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAPREP_CACHE", "off")
    path = tmp_path / "deploy.prototxt"
    path.write_text(DEPLOY)
    calls = []
    parse = prototxt.net_sections
    monkeypatch.setattr(prototxt, "net_sections", lambda p: calls.append(p) or parse(p))
    assert prototxt_cache.net_sections(path) == prototxt_cache.net_sections(path)
    assert len(calls) == 2


def test_the_least_recently_used_go_past_the_limit(tmp_path, monkeypatch):
    path = tmp_path / "deploy.prototxt"
    path.write_text(DEPLOY)
    prototxt_cache.net_sections(path)
    (old,) = _kept()
    monkeypatch.setattr(prototxt_cache, "KEEP_BYTES", old.stat().st_size)  # room for one
    path.write_text(DEPLOY.replace("num_output: 4", "num_output: 5"))
    prototxt_cache.net_sections(path)
    (new,) = _kept()
    assert new != old


def test_a_missing_or_broken_prototxt_is_said_by_the_parser(tmp_path):
    from dataprep.errors import UsageError

    with pytest.raises(UsageError, match="no such file"):
        prototxt_cache.net_sections(tmp_path / "missing.prototxt")
    (tmp_path / "broken.prototxt").write_text("layer { name: ")
    with pytest.raises(UsageError, match="broken.prototxt"):
        prototxt_cache.net_sections(tmp_path / "broken.prototxt")
    assert _kept() == []
