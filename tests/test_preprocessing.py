"""Device crop + resize + normalise against OpenCV, and SeqTrack's box geometry against plain Python."""
import math

import cv2
import numpy as np
import pytest
import torch

from actrack_fast.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    as_image,
    boxes_in_crop,
    check_box,
    clip_boxes,
    crop_and_resize,
    crop_geometry,
    map_boxes_back,
    normalize_crops,
)


def opencv_crop(image, box, factor, size):
    """The spec's crop with OpenCV: zero border outside the image, then INTER_LINEAR resize."""
    x, y, w, h = box
    side = math.ceil(math.sqrt(w * h) * factor)
    x1, y1 = round(x + 0.5 * w - side * 0.5), round(y + 0.5 * h - side * 0.5)
    H, W = image.shape[:2]
    left, top, right, bottom = max(x1, 0), max(y1, 0), min(x1 + side, W), min(y1 + side, H)
    if right <= left or bottom <= top:
        padded = np.zeros((side, side, 3), np.uint8)
    else:
        padded = cv2.copyMakeBorder(image[top:bottom, left:right], top - y1, y1 + side - bottom, left - x1,
                                    x1 + side - right, cv2.BORDER_CONSTANT, value=0)
    assert padded.shape[:2] == (side, side)
    return cv2.resize(padded, (size, size), interpolation=cv2.INTER_LINEAR), size / side


def random_boxes(rng, H, W, count):
    """Boxes inside, straddling and fully outside the image; integer and fractional, some tiny, some huge."""
    boxes = []
    for i in range(count):
        w, h = rng.uniform(0.3, 1.5 * W), rng.uniform(0.3, 1.5 * H)
        cx, cy = rng.uniform(-W, 2 * W), rng.uniform(-H, 2 * H)
        box = [cx - w / 2, cy - h / 2, w, h]
        if i % 3 == 0:  # integers make rounding ties (x + w/2 - c/2 = k + 0.5) common
            box = [float(round(v)) for v in box[:2]] + [float(max(1, round(v))) for v in box[2:]]
        boxes.append(box)
    return boxes


@pytest.mark.parametrize("size,factor", [(16, 4.0), (32, 2.0), (37, 4.0), (128, 4.0), (64, 1.0)])
def test_crop_matches_opencv(size, factor):
    rng = np.random.default_rng(size)
    total = exact = 0
    for H, W in [(23, 31), (64, 48), (90, 120)]:
        image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        boxes = random_boxes(rng, H, W, 12)
        crops, geometry = crop_and_resize(torch.from_numpy(image), boxes, factor, size)
        for i, box in enumerate(boxes):
            expected, resize_factor = opencv_crop(image, box, factor, size)
            got = crops[i].numpy()
            diff = np.abs(got.astype(int) - expected.astype(int))
            assert diff.max() <= 1, f"box {box}: max diff {diff.max()}"
            total += diff.size
            exact += int((diff == 0).sum())
            assert geometry.resize_factor[i].item() == resize_factor
    # The fixed-point arithmetic is OpenCV's own, so the crops are in fact bit-identical.
    assert exact == total


def test_crop_fully_outside_is_zero_and_inside_matches_plain_resize():
    rng = np.random.default_rng(1)
    image = rng.integers(1, 256, (40, 50, 3), dtype=np.uint8)
    boxes = [[200.0, 10, 8, 8], [-60, -70, 10, 12], [10, 10, 10, 10]]
    crops, geometry = crop_and_resize(torch.from_numpy(image), boxes, 2.0, 24)
    assert crops[:2].sum() == 0
    x1, y1, side = geometry.x1[2].item(), geometry.y1[2].item(), geometry.side[2].item()
    assert (x1, y1, side) == (5, 5, 20)
    expected = cv2.resize(image[5:25, 5:25], (24, 24), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(crops[2].numpy(), expected)


def test_crop_several_images_of_different_sizes_in_one_call():
    rng = np.random.default_rng(2)
    images = [torch.from_numpy(rng.integers(0, 256, shape, dtype=np.uint8)) for shape in [(30, 40, 3), (55, 21, 3)]]
    boxes = np.array([[5.0, 6, 12, 9], [3, 20, 10, 14], [30, 2, 15, 20], [-4, 40, 9, 11]])
    index = [0, 1, 0, 1]
    crops, _ = crop_and_resize(images, boxes, 4.0, 32, index)
    for i in range(4):
        alone, _ = crop_and_resize(images[index[i]], boxes[i:i + 1], 4.0, 32)
        torch.testing.assert_close(crops[i], alone[0], rtol=0, atol=0)


def test_normalize_crops_rounds_the_float64_result_once():
    crops = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8)
    out = normalize_crops(crops)
    assert out.shape == (2, 3, 8, 8) and out.dtype == torch.float32
    expected = (crops.numpy().astype(np.float64) / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_array_equal(out.permute(0, 2, 3, 1).numpy(), expected.astype(np.float32))


def test_geometry_and_box_mapping_follow_seqtrack_in_double():
    rng = np.random.default_rng(3)
    boxes = np.array(random_boxes(rng, 100, 120, 200))
    size = 256
    geometry = crop_geometry(boxes, 4.0, size)
    pred = torch.rand(200, 4) * 1.2 - 0.1
    mapped = map_boxes_back(pred.numpy(), boxes, geometry, size)
    clipped = clip_boxes(mapped, np.full(200, 100.0), np.full(200, 120.0), 10)
    for i, (x, y, w, h) in enumerate(boxes.tolist()):
        side = math.ceil(math.sqrt(w * h) * 4.0)
        assert geometry.side[i].item() == side
        assert geometry.x1[i].item() == round(x + 0.5 * w - side * 0.5)
        assert geometry.y1[i].item() == round(y + 0.5 * h - side * 0.5)
        resize_factor = size / side
        # SeqTrack: (pred * size / resize_factor) on a float32 tensor, then map_box_back and clip_box in Python.
        cx, cy, pw, ph = (pred[i] * size / resize_factor).tolist()
        half = 0.5 * size / resize_factor
        cx, cy = cx + (x + 0.5 * w - half), cy + (y + 0.5 * h - half)
        box = [cx - 0.5 * pw, cy - 0.5 * ph, pw, ph]
        assert mapped[i].tolist() == box
        x1, y1 = box[0], box[1]
        x2, y2 = x1 + box[2], y1 + box[3]
        x1, x2 = min(max(0, x1), 120 - 10), min(max(10, x2), 120)
        y1, y2 = min(max(0, y1), 100 - 10), min(max(10, y2), 100)
        assert clipped[i].tolist() == [x1, y1, max(10, x2 - x1), max(10, y2 - y1)]
    # The prompt geometry inverts the mapping; the previous box sits at the crop centre.
    np.testing.assert_allclose(boxes_in_crop(mapped, boxes, geometry, size), pred.numpy(), rtol=0, atol=1e-6)
    prompt = boxes_in_crop(boxes, boxes, geometry, size)
    assert (prompt[:, :2] == 0.5).all()


def test_clipped_boxes_stay_inside_with_margin():
    far = np.array([[500.0, 400, 30, 20], [-300, -200, 15, 25], [-50, 10, 2000, 5]])
    x, y, w, h = clip_boxes(far, np.full(3, 60.0), np.full(3, 80.0), 10).T
    assert (w >= 10).all() and (h >= 10).all()
    assert (x >= 0).all() and (y >= 0).all() and (x + w <= 80).all() and (y + h <= 60).all()


def test_as_image_rejects_bad_images():
    good = np.zeros((4, 5, 3), np.uint8)
    assert as_image(good, "cpu").shape == (4, 5, 3)
    with pytest.raises(ValueError, match=r"image must have shape \(H, W, 3\)"):
        as_image(np.zeros((4, 5), np.uint8), "cpu")
    with pytest.raises(ValueError, match="shape"):
        as_image(torch.zeros(4, 5, 4, dtype=torch.uint8), "cpu")
    with pytest.raises(ValueError, match="empty"):
        as_image(np.zeros((0, 5, 3), np.uint8), "cpu")
    with pytest.raises(TypeError, match="uint8"):
        as_image(np.zeros((4, 5, 3), np.float32), "cpu")
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        as_image([[0, 0, 0]], "cpu")


def test_check_box_rejects_bad_boxes():
    assert check_box((1, 2, 3, 4), 10, 10, 4.0) == (1.0, 2.0, 3.0, 4.0)
    for bad, message in [((1, 2, 0, 4), "positive"), ((1, 2, 3, -1), "positive"), ((1, 2, 3), "4 numbers"),
                         ((1, float("nan"), 3, 4), "finite"), ((10, 2, 3, 4), "outside"),
                         ((-5, 2, 5, 4), "outside"), ((2, 12, 3, 4), "outside")]:
        with pytest.raises(ValueError, match=message):
            check_box(bad, 10, 10, 4.0)


@pytest.mark.cuda
def test_crop_on_gpu_equals_cpu_and_opencv():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    boxes = random_boxes(rng, 480, 640, 64)
    cpu, _ = crop_and_resize(torch.from_numpy(image), boxes, 4.0, 256)
    gpu, _ = crop_and_resize(torch.from_numpy(image).cuda(), boxes, 4.0, 256)
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=0)
    for i in range(0, 64, 8):
        expected, _ = opencv_crop(image, boxes[i], 4.0, 256)
        assert np.abs(gpu[i].cpu().numpy().astype(int) - expected.astype(int)).max() <= 1
