"""Transforms against independent references (OpenCV or plain NumPy), on every array
module available: NumPy always, CuPy when a GPU is there."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dataprep import transforms as T
from dataprep.gpu import gpu_available

BACKENDS = [
    "numpy",
    pytest.param(
        "cupy",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a CUDA device"),
        ],
    ),
]


@pytest.fixture(params=BACKENDS)
def xp(request):
    return pytest.importorskip(request.param)


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def picture(h=40, w=50, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, c), dtype=np.uint8), (5, 5), 0).reshape(h, w, c)


def test_rotation_matches_opencv(xp):
    img = picture()
    m = T.rotation_matrix(23, img.shape[:2])
    ours = host(T.to_uint8(T.affine_sample(xp.asarray(img, dtype=xp.float32), m, img.shape[:2])))
    ref = cv2.warpAffine(
        img, m, (50, 40), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT
    )
    assert np.abs(ours.astype(int) - ref).max() <= 1


def test_crop_resize_matches_opencv_linear(xp):
    img = picture()
    m = T.crop_resize_matrix(0, 0, 40, 50, (20, 25))
    ours = host(T.to_uint8(T.affine_sample(xp.asarray(img, dtype=xp.float32), m, (20, 25))))
    ref = cv2.resize(img, (25, 20), interpolation=cv2.INTER_LINEAR)
    assert np.abs(ours.astype(int) - ref).max() <= 1


def test_color_ops_match_numpy(xp):
    img = picture().astype(np.float32)
    x = xp.asarray(img)
    gray = img @ np.array([0.114, 0.587, 0.299], np.float32)
    assert np.allclose(host(T.brightness(x, 1.3)), img * 1.3)
    assert np.allclose(host(T.contrast(x, 0.5)), (img - gray.mean()) * 0.5 + gray.mean(), atol=1e-3)
    assert np.allclose(host(T.saturation(x, 0.0)), np.repeat(gray[..., None], 3, axis=2), atol=1e-3)
    assert np.allclose(
        host(T.gray_of(x))[..., 0], cv2.cvtColor(picture(), cv2.COLOR_BGR2GRAY).astype(np.float32), atol=1
    )
    assert np.array_equal(host(T.mirror(x)), img[:, ::-1])


def test_lighting_shifts_each_channel_by_the_pca_vector(xp):
    img = np.full((4, 4, 3), 100, np.float32)
    alphas = np.array([0.1, -0.2, 0.05], np.float32)
    out = host(T.lighting(xp.asarray(img), alphas))
    rgb = np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]) @ (
        alphas * np.array([0.2175, 0.0188, 0.0045]) * 255
    )
    assert np.allclose(out[0, 0], 100 + rgb[::-1], atol=1e-3)


def test_caffe_transform_order_and_crops(xp):
    img = picture(8, 10)
    mean = np.arange(3 * 8 * 10, dtype=np.float32).reshape(3, 8, 10) / 10
    out = host(T.caffe_transform(xp.asarray(img), crop_size=4, mean=xp.asarray(mean), scale=0.5))
    want = (img.transpose(2, 0, 1).astype(np.float32)[:, 2:6, 3:7] - mean[:, 2:6, 3:7]) * 0.5
    assert np.allclose(out, want)
    # training crops are random windows, each mirrored or not: every output is one of them
    chw = img.transpose(2, 0, 1).astype(np.float32)
    windows = {
        (t, x, f): (chw[:, t : t + 4, x : x + 4][:, :, ::-1] if f else chw[:, t : t + 4, x : x + 4])
        for t in range(5)
        for x in range(7)
        for f in (False, True)
    }
    rng = np.random.default_rng(1)
    drawn = set()
    for _ in range(20):
        out = host(T.caffe_transform(xp.asarray(img), crop_size=4, train=True, mirror_flag=True, rng=rng))
        drawn |= {k for k, w in windows.items() if np.array_equal(out, w)}
    assert len(drawn) > 5 and {f for _, _, f in drawn} == {False, True}
    values = host(T.caffe_transform(xp.asarray(img), mean=[104, 117, 123]))
    assert np.allclose(values[:, 0, 0], img[0, 0] - np.array([104, 117, 123]))


def test_params_depend_only_on_the_generator():
    spec = T.AugmentSpec(
        crop_scale=(0.2, 1.0),
        out_size=(16, 16),
        mirror=True,
        rotate=15,
        brightness=0.3,
        lighting=0.1,
        noise=3,
    )
    a = T.sample_params(np.random.default_rng([5, 2, 1]), (40, 50), spec)
    b = T.sample_params(np.random.default_rng([5, 2, 1]), (40, 50), spec)
    assert repr(a) == repr(b)
    img = picture()
    assert np.array_equal(T.apply(img, a, spec), T.apply(img, b, spec))
    assert T.apply(img, a, spec).shape == (16, 16, 3)
    top, left, h, w = a.window
    assert 0 <= top <= 40 - h and 0 <= left <= 50 - w


def test_unsafe_transforms_are_named():
    assert T.AugmentSpec(rotate=5, mirror=True).unsafe_for_float_labels() == ["rotate"]
    assert T.AugmentSpec(crop=(4, 4), mirror=True, lighting=0.1).unsafe_for_float_labels() == []


def test_batched_transfers_round_trip(xp):
    from dataprep.gpu import to_device, to_host

    images = [picture(5, 7), picture(3, 4, 1, seed=2), picture(6, 6, seed=3).astype(np.float32)]
    on_device = to_device(images, xp)
    assert all(type(a).__module__.split(".")[0] == xp.__name__ for a in on_device)
    back = to_host(on_device)
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(images, back))


@pytest.mark.parametrize(
    "interpolation, flag, hw",
    [
        ("area", cv2.INTER_AREA, (16, 20)),
        ("area", cv2.INTER_AREA, (13, 17)),
        ("linear", cv2.INTER_LINEAR, (16, 20)),
        ("linear", cv2.INTER_LINEAR, (70, 90)),
    ],
)
def test_matrix_resize_matches_opencv(xp, interpolation, flag, hw):
    img = picture(40, 50)
    ours = host(T.to_uint8(T.resize(xp.asarray(img), hw, interpolation)))
    ref = cv2.resize(img, (hw[1], hw[0]), interpolation=flag)
    assert ours.shape == ref.shape and np.abs(ours.astype(int) - ref).max() <= 1


def test_shift_moves_the_content_and_leaves_zeros_where_nothing_came_in():
    """augment --shift (issue 33): Keras' translation, drawn within FRAC of each side."""
    image = np.arange(6 * 8 * 1, dtype=np.uint8).reshape(6, 8, 1) + 10
    spec = T.AugmentSpec(shift=0.25)
    out = T.apply(image, T.AugmentParams(shift=(2.0, -3.0)), spec)
    assert np.array_equal(out[2:, :5], image[:4, 3:]) and not out[:2].any() and not out[:, 5:].any()
    rng = np.random.default_rng(1)
    draws = [T.sample_params(rng, (40, 80), spec).shift for _ in range(200)]
    downs, rights = np.array(draws).T
    assert np.abs(downs).max() <= 10 and np.abs(rights).max() <= 20 and np.abs(rights).max() > 15
    cropped = T.AugmentSpec(shift=0.5, crop=(8, 8))  # a share of the crop, not of the image
    assert all(abs(v) <= 4 for _ in range(50) for v in T.sample_params(rng, (40, 80), cropped).shift)
    assert T.sample_params(rng, (40, 80), T.AugmentSpec(rotate=5)).shift == (0.0, 0.0)  # off: no move


@pytest.mark.parametrize("mean", [None, "image", "channels"])
@pytest.mark.parametrize("scale", [1.0, 0.00390625])
def test_a_batch_transformed_whole_gives_the_images_bytes(mean, scale):
    """``caffe_transform`` of N x H x W x C (the loader's batch where nothing is drawn per
    image): the per-image results stacked, byte for byte; crops and mirrors refused."""
    from dataprep.transforms import caffe_transform

    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (5, 7, 6, 3), dtype=np.uint8)
    m = {None: None, "image": rng.normal(100, 20, (3, 7, 6)), "channels": [104.0, 117.0, 123.0]}[mean]
    whole = caffe_transform(batch, 0, True, m, scale, train=False)
    one_by_one = np.stack([caffe_transform(image, 0, True, m, scale, train=False) for image in batch])
    assert whole.dtype == np.float32 and whole.tobytes() == one_by_one.tobytes()
    with pytest.raises(ValueError):
        caffe_transform(batch, 4, False, m, scale, train=True, rng=rng)
    with pytest.raises(ValueError):
        caffe_transform(batch, 0, True, m, scale, train=True, rng=rng)
