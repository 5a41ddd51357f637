"""images.py: the size grammar, shape wording, channel modes and what counts as unchanged."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dataprep.errors import ImageError, UsageError
from dataprep.images import Channels, decode, describe_shape, parse_size, resize


@pytest.mark.parametrize("text, size", [("100x150", (100, 150)), ("227", (227, 227)), ("1x1", (1, 1))])
def test_sizes_are_hxw_or_one_number(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["256,256", "256 x 256", " 256x256", "256X256", "big", "", "-3"])
def test_other_size_forms_are_usage_errors_that_name_the_grammar(text):
    with pytest.raises(UsageError, match="--crop .*HxW .height x width"):
        parse_size(text, "--crop")
    with pytest.raises(UsageError, match="sides must be at least 1"):
        parse_size("0x5")


def test_shapes_are_worded_one_way_whatever_the_axis_order():
    assert describe_shape((191, 384, 3)) == "191x384 (HxW) with 3 channels"
    assert describe_shape((1, 100, 100), "CHW") == "100x100 (HxW) with 1 channel"


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


GRAY = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
COLOR = np.dstack([GRAY, GRAY // 2, 255 - GRAY])


def test_decode_modes():
    assert decode(png(GRAY), "auto").shape == (3, 4, 1)
    assert decode(png(COLOR), "auto").shape == (3, 4, 3)
    expanded = decode(png(GRAY), "color")
    assert expanded.shape == (3, 4, 3) and all(np.array_equal(expanded[..., c], GRAY) for c in range(3))
    assert np.array_equal(decode(png(COLOR), "gray")[..., 0], cv2.imdecode(
        np.frombuffer(png(COLOR), np.uint8), cv2.IMREAD_GRAYSCALE))  # fmt: skip
    with pytest.raises(ValueError):
        decode(b"not an image", "auto")


def test_channels_resolve_from_the_first_readable_image(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"junk")
    (tmp_path / "g.png").write_bytes(png(GRAY))
    (tmp_path / "c.png").write_bytes(png(COLOR))
    candidates = [(tmp_path / "bad.png", "l:1"), (tmp_path / "g.png", "l:2"), (tmp_path / "c.png", "l:3")]
    auto = Channels().resolve(candidates)
    assert (auto.count, auto.first) == (1, "l:2")
    assert Channels().resolve(candidates[2:]).count == 3
    assert Channels("color").resolve(candidates).count == 3 and Channels("gray").resolve([]).count == 1
    with pytest.raises(ImageError, match="l:3: a color image, but the first image .l:2. is gray") as err:
        auto.load(tmp_path / "c.png", "l:3", line=3)
    assert err.value.line == 3


def test_load_returns_the_file_bytes_only_for_unchanged_pixels(tmp_path):
    (tmp_path / "g.png").write_bytes(png(GRAY))
    (tmp_path / "c.png").write_bytes(png(COLOR))
    gray_auto = Channels("auto", 1)
    assert gray_auto.load(tmp_path / "g.png", "g")[0] == (tmp_path / "g.png").read_bytes()
    assert Channels("color", 3).load(tmp_path / "g.png", "g")[0] is None  # expanded: re-encode
    assert Channels("gray", 1).load(tmp_path / "c.png", "c")[0] is None  # converted: re-encode
    assert Channels("color", 3).load(tmp_path / "c.png", "c")[0] == (tmp_path / "c.png").read_bytes()
    with pytest.raises(ImageError, match="missing.png: cannot read image"):
        gray_auto.load(tmp_path / "missing.png", "missing.png")


def test_resize_keeps_the_channel_axis():
    assert resize(GRAY[:, :, None], (6, 8)).shape == (6, 8, 1)
    assert resize(COLOR, (3, 4)) is COLOR  # already that size: untouched


def test_decoding_scales_16_bits_applies_exif_orientation_and_drops_alpha():
    """What docs/formats.md promises each pixel store keeps of an image."""
    import io

    import cv2
    from PIL import Image

    from dataprep.images import decode

    deep = np.arange(12 * 16 * 3, dtype=np.uint16).reshape(12, 16, 3) * 150
    got = decode(cv2.imencode(".png", deep)[1].tobytes(), "auto")
    assert got.dtype == np.uint8 and np.array_equal(got, (deep >> 8).astype(np.uint8))
    rgba = np.dstack([np.full((4, 4, 3), 9, np.uint8), np.full((4, 4), 7, np.uint8)])
    assert decode(cv2.imencode(".png", rgba)[1].tobytes(), "auto").shape == (4, 4, 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    out = io.BytesIO()
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(out, "JPEG", exif=exif.tobytes())
    assert decode(out.getvalue(), "color").shape == (20, 10, 3)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_planar_bytes_are_the_pixels_in_channel_order(channels):
    """A raw Datum's C x H x W bytes, for any channel count and a non-contiguous view."""
    from dataprep.images import planar_bytes

    image = np.random.default_rng(channels).integers(0, 256, (6, 9, channels), dtype=np.uint8)
    for view in (image, image[:, ::-2], image[1:5]):
        assert planar_bytes(view) == np.ascontiguousarray(view.transpose(2, 0, 1)).tobytes()
