"""The encode settings (codecnn.encoders.settings): one object built from one set of click options, checked
where it is made, the form a dataset stores, and the same options with the same help in every command."""

from __future__ import annotations

import dataclasses
import os
import pickle

import click
import pytest
from click.testing import CliRunner

from codecnn.cli import cli
from codecnn.data.build import BuildOptions
from codecnn.encoders import EncodeSettings, make_encoder
from codecnn.errors import CodecnnError, EncoderError, InvalidQPError
from codecnn.options import encode_options


def test_rules_between_options():
    with pytest.raises(CodecnnError, match="--frame-step 2 with --config ra: inter coding needs consecutive frames"):
        EncodeSettings(config="ra", frame_step=2)
    with pytest.raises(EncoderError, match="x265 cannot code low delay B.*--encoder hm"):
        EncodeSettings(config="ldb")
    assert EncodeSettings(encoder="hm", config="ldb").config == "ldb"  # HM codes it
    assert EncodeSettings(frame_step=3).frame_step == 3  # all intra: only those frames are coded
    with pytest.raises(CodecnnError, match="x265 setting"):
        EncodeSettings(encoder="hm", threads=2)


@pytest.mark.parametrize(
    "kw, error, words",
    [
        ({"frame_step": 0}, CodecnnError, "--frame-step 0: use 1 or more"),
        ({"frames": 0}, CodecnnError, "--frames 0: use 1 or more"),
        ({"start": -1}, CodecnnError, "--start -1: use 0 or more"),
        ({"qps": (22, 52)}, InvalidQPError, "QP 52 is outside"),
        ({"config": "xx"}, CodecnnError, "--config 'xx'"),
        ({"encoder": "vtm"}, EncoderError, "unknown encoder 'vtm'"),
    ],
)
def test_bad_values(kw, error, words):
    with pytest.raises(error, match=words):
        EncodeSettings(**kw)


def test_encoder_options_and_encoder():
    x = EncodeSettings(qps=[37, 22], deblock=False)
    assert x.qps == (37, 22) and x.encode_qps == (37, 22) and EncodeSettings().encode_qps == (22, 27, 32, 37)
    assert x.encoder_options() == (
        ("config", "ai"),
        ("deblock", False),
        ("preset", "medium"),
        ("sao", True),
        ("tune", "psnr"),
    )
    enc = x.make_encoder()
    assert (enc.name, enc.deblock, enc.sao, enc.preset) == ("x265", False, True, "medium")
    assert dict(EncodeSettings(threads=1).encoder_options())["threads"] == 1
    hm = EncodeSettings(encoder="hm", config="ra", hm_bin="TAppEncoderStatic", hm_cfg="ra.cfg", sao=False)
    assert hm.encoder_options() == (
        ("binary", "TAppEncoderStatic"),
        ("cfg", "ra.cfg"),
        ("config", "ra"),
        ("deblock", True),
        ("sao", False),
    )
    assert make_encoder("x265", **dict(x.encoder_options())).describe() == enc.describe()


def test_travels_whole():
    """Frozen and of plain values: it pickles (a Dask task) and hashes; the post-filter variants are copies."""
    s = EncodeSettings(size="176x144", fps=30.0, frames=4, qps=(32,), encoder="hm", config="ldb", hm_cfg="a/b.cfg")
    again = pickle.loads(pickle.dumps(s))
    assert again == s and hash(again) == hash(s)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.frames = 8
    off = dataclasses.replace(s, deblock=False, sao=False)
    assert (off.deblock, off.sao, off.frames, s.deblock) == (False, False, 4, True)
    p = s.portable()
    assert p.hm_cfg == os.path.abspath("a/b.cfg") and p.hm_bin is None and p.config == "ldb"
    assert EncodeSettings(hm_bin="TAppEncoderStatic").portable().hm_bin == "TAppEncoderStatic"  # found on the PATH
    assert EncodeSettings(hm_bin="bin/TAppEncoderStatic").portable().hm_bin == os.path.abspath("bin/TAppEncoderStatic")


def test_build_options_stored_form():
    """The build options a dataset stores (and ``--resume`` compares with its parts folder's) keep their form:
    the QPs coded, the encoder with its options and the frames chosen, then the cut."""
    o = BuildOptions(EncodeSettings(size="176x144", frames=3, frame_step=2, preset="ultrafast"), ctu=64)
    assert list(o.to_json().items()) == [
        ("qps", [22, 27, 32, 37]),
        ("encoder", "x265"),
        ("encoder_options", {"config": "ai", "deblock": True, "preset": "ultrafast", "sao": True, "tune": "psnr"}),
        ("start", 0),
        ("frames", 3),
        ("frame_step", 2),
        ("ctu", 64),
        ("context", 2),
        ("seed", 0),
        ("task", "restoration"),
        ("intra_cost", "dct"),
        ("intra_loop", "closed"),
        ("block_sizes", [4, 8, 16, 32]),
    ]
    with pytest.raises(CodecnnError, match="--qp values repeat"):
        BuildOptions(EncodeSettings(qps=(32, 32)))


def test_decorator_builds_the_settings(monkeypatch):
    for var in ("CODECNN_HM_BIN", "CODECNN_HM_CFG"):  # --hm-bin/--hm-cfg defaults: a user's HM must not leak in
        monkeypatch.delenv(var, raising=False)
    seen = []

    @click.command()
    @encode_options
    @click.option("--flag", is_flag=True)
    def cmd(encode, flag):
        seen.append(encode)

    @click.command()
    @encode_options(hm_flag="flag")
    @click.option("--flag", is_flag=True)
    def hm_when_flagged(encode, flag):
        seen.append(encode)

    args = ["--size", "176x144", "--bit-depth", "10", "--qp", "37", "--qp", "22", "--config", "ldp", "--no-sao"]
    assert CliRunner().invoke(cmd, args).exit_code == 0
    want = EncodeSettings(size="176x144", bit_depth=10, qps=(37, 22), config="ldp", sao=False)
    assert seen.pop() == want
    r = CliRunner().invoke(cmd, ["--config", "ra", "--frame-step", "2"])
    assert r.exit_code != 0 and "consecutive frames" in str(r.exception)
    assert CliRunner().invoke(hm_when_flagged, ["--config", "ldb", "--flag"]).exit_code == 0
    assert seen.pop() == EncodeSettings(encoder="hm", config="ldb")
    r = CliRunner().invoke(hm_when_flagged, ["--config", "ldb"])
    assert r.exit_code != 0 and "low delay B" in str(r.exception)


def _encode_help(command: click.Command) -> list[tuple[str, str]]:
    ctx = click.Context(command, info_name=command.name)
    return [p.get_help_record(ctx) for p in command.params if isinstance(p, click.Option)]


def _commands(group: click.Group):
    for command in group.commands.values():
        yield from _commands(command) if isinstance(command, click.Group) else [command]


def test_same_encode_options_in_every_command():
    """Every command that encodes (make-dataset, evaluate, ...: those with --encoder) lists the encode options
    of the one decorator, together, in its order and with its help lines: they cannot drift apart."""

    @click.command()
    @encode_options
    def reference(encode):
        pass

    want = _encode_help(reference)
    assert len(want) == 15 and want[0][0] == "--size WxH" and want[-1][0] == "--hm-cfg PATH"
    encoding = [c for c in _commands(cli) if any(p.name == "encoder" for p in c.params)]
    assert {"make-dataset", "evaluate"} <= {c.name for c in encoding}
    for command in encoding:
        rows = _encode_help(command)
        k = rows.index(want[0])
        assert rows[k : k + len(want)] == want, command.name
