"""The shipped pretrained networks: every index entry loads, matches its SHA-256, carries its provenance and
results, and is usable wherever a checkpoint is read (zoo:NAME)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from codecnn.cli import cli
from codecnn.errors import CodecnnError
from codecnn.train.checkpoint import load_model
from codecnn.zoo import ZOO_DIR, entries, resolve, sha256


def test_every_shipped_model_loads_and_matches_its_index():
    items = entries()
    assert any(e["setting"] == "in-loop" for e in items)  # at least the in-loop RDN is shipped
    for e in items:
        path = resolve(f"zoo:{e['name']}")
        assert path == ZOO_DIR / e["file"] and sha256(path) == e["sha256"]
        model, ck = load_model(f"zoo:{e['name']}")
        assert ck["arch"] == e["arch"] and json.loads(json.dumps(ck["config"])) == e["config"]
        assert ck.get("optimizer") is None
        assert sum(p.numel() for p in model.parameters()) == e["params"]
        assert (ZOO_DIR / e["log"]).is_file() and e["trained"]["command"] and e["trained"]["machine"]
        assert e["results"]
        for r in e["results"]:
            if e["setting"] == "intra-modes":  # evaluate-modes figures: recalls and the pruned RMD by k
                o = r["overall"]
                assert r["label"] and r["blocks"] > 0 and 0 < o["top1"] <= o["top3"] <= o["top8"] <= 1
                assert all(m["satd_evaluations"] < 35 for k, m in o["pruned_rmd"].items() if k != "full")
            else:
                assert r["label"] and r["sequences"] and r["qps"] and isinstance(r["gain_y"], float)


def test_zoo_command_and_unknown_names():
    r = CliRunner().invoke(cli, ["zoo", "--json"])
    assert r.exit_code == 0, r.output
    listed = json.loads(r.output)
    assert [e["name"] for e in listed] == [e["name"] for e in entries()]
    assert all({"name", "setting", "sha256", "results"} <= set(e) for e in listed)
    r = CliRunner().invoke(cli, ["zoo"])
    assert r.exit_code == 0 and all(f"zoo:{e['name']}" in r.output for e in listed)
    with pytest.raises(CodecnnError, match="no such shipped model"):
        resolve("zoo:nope")


def test_export_a_shipped_model(tmp_path):
    name = next(e["name"] for e in entries() if e["setting"] == "in-loop")
    out = tmp_path / "m.cnnw"
    r = CliRunner().invoke(cli, ["export", f"zoo:{name}", "--out", str(out)])
    assert r.exit_code == 0 and out.stat().st_size > 1000, r.output


def test_in_loop_results_and_inter_models_of_the_index():
    """Entries measured inside HM keep each result's condition, signalling and per-sequence BD-rates, which
    `codecnn zoo` prints; an entry's model for P and B pictures resolves to a shipped .cnnw (its own or
    another entry's), and an entry without one gives None."""
    from codecnn.cli.zoo import in_loop_line
    from codecnn.zoo import resolve_inter

    measured = [e for e in entries() if e.get("in_loop")]
    assert measured
    out = CliRunner().invoke(cli, ["zoo"]).output
    for e in measured:
        for r in e["in_loop"]:
            assert r["config"] in ("ai", "ra", "ldb", "ldp") and r["signal"] in ("always", "picture", "ctu")
            assert all(set(s["bd_rate"]) == {"y", "u", "v"} and s["frames"] > 0 for s in r["sequences"])
            assert r.get("placement", "after SAO") in ("after SAO", "before SAO")
            assert in_loop_line(r) in out and (", before SAO" in in_loop_line(r)) == (
                r.get("placement") == "before SAO"
            )
        inter = resolve_inter(f"zoo:{e['name']}")
        assert inter is None or (inter.suffix == ".cnnw" and inter.is_file())
    assert resolve_inter("some/path.cnnw") is None
