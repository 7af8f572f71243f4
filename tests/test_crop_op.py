"""The compiled crop ops (csrc/, backend ``"cuda"`` of op ``"crop"``) against the torch references of
:func:`actrack_fast.preprocessing.crop_pixels` (and OpenCV), :func:`~actrack_fast.preprocessing.crop_normalized` and
:func:`~actrack_fast.preprocessing.crop_normalized_into`: bit-identical crops and normalised crops in every floating
dtype, atol 0, the masked op leaving the rows it does not select untouched.

CPU tests run the extension's C++ kernel (CI builds it); GPU tests (``cuda`` marker) run its CUDA kernel against
the C++ kernel and the reference on both devices, inside a CUDA graph and under ``torch.compile``. Images range
from 1x1 to 480x640, boxes lie inside, across and outside them (integer ones make rounding ties), crops from 1 to
384 pixels with factors 1 to 5.
"""
import copy
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch._dynamo.backends.registry import lookup_backend
from test_preprocessing import opencv_crop, random_boxes

from actrack_fast import backend, crop_op
from actrack_fast.cuda_graphs import capture_graph
from actrack_fast.preprocessing import ImageLayout, crop_geometry, crop_normalized, crop_normalized_into, crop_pixels

if crop_op._C is None and os.environ.get("ACTRACK_NO_EXT") == "1":
    pytest.skip("the extension was skipped on purpose (ACTRACK_NO_EXT=1)", allow_module_level=True)

op = torch.ops.actrack_fast.crop_resize
normalize_op = torch.ops.actrack_fast.crop_normalize
into_op = torch.ops.actrack_fast.crop_normalize_into
FLOAT_DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]

# (size, factor): ACTrack's template (128, 2) and search (256, 4) crops, odd and tiny sizes, other factors.
SIZES = [(1, 2.0), (16, 4.0), (37, 2.5), (64, 1.0), (128, 2.0), (101, 5.0), (256, 4.0)]


class Frames:
    """Random uint8 images stored one after the other in a (P, 3) pixel table, and targets' boxes in them (from
    ``random_boxes``: inside, across and outside the image, a third of them integer), in shuffled order."""

    def __init__(self, shapes, boxes_per_image, seed, device="cpu"):
        rng = np.random.default_rng(seed)
        self.images = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for H, W in shapes]
        pairs = [(i, box) for i, (H, W) in enumerate(shapes) for box in random_boxes(rng, H, W, boxes_per_image)]
        pairs = [pairs[k] for k in rng.permutation(len(pairs))]
        self.index, self.boxes = [i for i, _ in pairs], [box for _, box in pairs]
        self.pixels = torch.cat([torch.from_numpy(image).reshape(-1, 3) for image in self.images]).to(device)
        self.layout = ImageLayout.of([image.shape for image in self.images], self.index, device)
        self.box_tensor = torch.tensor(self.boxes, dtype=torch.float64, device=device)

    def to(self, device):
        """The same frames and boxes on ``device``."""
        moved = copy.copy(self)
        moved.pixels, moved.box_tensor = self.pixels.to(device), self.box_tensor.to(device)
        moved.layout = ImageLayout(*(t.to(device) for t in (self.layout.start, self.layout.height, self.layout.width)))
        return moved

    def crops(self, crop_backend, factor, size):
        """crop_pixels with the given ``crop`` backend."""
        with backend.use_backend(crop_backend, ops=("crop",)):
            crops = crop_pixels(self.pixels, self.layout, self.box_tensor, factor, size)
        return crops

    def normalized(self, crop_backend, factor, size, dtype):
        """crop_normalized with the given ``crop`` backend."""
        with backend.use_backend(crop_backend, ops=("crop",)):
            return crop_normalized(self.pixels, self.layout, self.box_tensor, factor, size, dtype)

    def op(self, factor, size):
        layout = self.layout
        return op(self.pixels, layout.start, layout.height, layout.width, self.box_tensor, factor, size)

    def normalize_op(self, factor, size, dtype):
        layout = self.layout
        return normalize_op(self.pixels, layout.start, layout.height, layout.width, self.box_tensor, factor, size,
                            dtype)

    def into_op(self, factor, size, out, where):
        layout = self.layout
        into_op(self.pixels, layout.start, layout.height, layout.width, self.box_tensor, factor, size, out, where)

    def into(self, crop_backend, factor, size, out, where):
        """crop_normalized_into with the given ``crop`` backend."""
        with backend.use_backend(crop_backend, ops=("crop",)):
            crop_normalized_into(self.pixels, self.layout, self.box_tensor, factor, size, out, where)


def crop_one(image, box, factor, size):
    """The op on one (H, W, 3) uint8 numpy image and one box."""
    layout = ImageLayout.of([image.shape], [0], "cpu")
    return op(torch.from_numpy(image).reshape(-1, 3), layout.start, layout.height, layout.width,
              torch.tensor([box], dtype=torch.float64), factor, size)


def assert_identical(got, expected, what):
    assert got.dtype == torch.uint8 and got.shape == expected.shape, what
    mismatched = (got.cpu() != expected.cpu()).sum().item()
    assert mismatched == 0, f"{what}: {mismatched} of {got.numel()} bytes differ"


def assert_identical_values(got, expected, what):
    """Floating tensors equal bit for bit (NaN never passes)."""
    assert got.dtype == expected.dtype and got.shape == expected.shape, what
    assert not got.isnan().any(), what
    mismatched = (got.cpu() != expected.cpu()).sum().item()
    assert mismatched == 0, f"{what}: {mismatched} of {got.numel()} values differ"


def template_slots(count, slots, size, dtype, seed, device="cpu"):
    """(count, slots, 3, size, size) random values, none zero: a row the masked op must leave alone keeps values no
    crop (whose zero border normalises to three fixed values) would give."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(count, slots, 3, size, size, generator=generator, dtype=torch.float64) + 0.5).to(device, dtype)


def masks(count, seed, device="cpu"):
    """The update masks the tests try: a random one (both values present), none and all."""
    generator = torch.Generator().manual_seed(seed)
    random = torch.arange(count) % 2 == 0  # both values, whatever the count
    random = random[torch.randperm(count, generator=generator)]
    return {"random": random.to(device), "none": torch.zeros(count, dtype=torch.bool, device=device),
            "all": torch.ones(count, dtype=torch.bool, device=device)}


def masked(crops, where, before):
    """What the masked op must leave in ``before`` (a slot, (N, 3, S, S)): the crops where selected."""
    return torch.where(where[:, None, None, None], crops, before)


def assert_not_blank(crops):
    """Guards the comparisons against trivial inputs: some crops must hold image content (many boxes lie
    outside their image, whose crops are all zero)."""
    assert (crops.flatten(1).amax(dim=1) > 0).any()


# CPU: the extension's C++ kernel


@pytest.mark.parametrize("size,factor", SIZES)
@pytest.mark.parametrize("shape", [(23, 31), (1, 40), (40, 1), (1, 1), (90, 120), (480, 640)], ids=str)
def test_cpu_kernel_matches_reference(shape, size, factor):
    frames = Frames([shape], 12, seed=size * 1000 + shape[0] * 7 + shape[1])
    expected = frames.crops("reference", factor, size)
    got = frames.op(factor, size)
    assert_identical(got, expected, f"{shape} size {size} factor {factor}")
    assert_not_blank(got)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("size,factor", [(1, 2.0), (37, 2.5), (128, 2.0)])
def test_cpu_normalize_kernel_matches_reference(size, factor, dtype):
    frames = Frames([(23, 31), (90, 120)], 8, seed=size + 3)
    got = frames.normalize_op(factor, size, dtype)
    assert got.shape == (len(frames.boxes), 3, size, size) and got.dtype == dtype
    assert_identical_values(got, frames.normalized("reference", factor, size, dtype), f"{dtype} size {size}")
    assert got.unique().numel() > 3  # image content, not only the zero border's three channel values


def test_cpu_normalize_kernel_hits_every_table_entry():
    # A 16 x 16 x 3 image holding each byte value once per channel, cropped at its own size: every pixel is a
    # copy, so the output must be the table looked up at every value.
    values = torch.arange(256, dtype=torch.uint8).reshape(16, 16, 1).expand(16, 16, 3).contiguous()
    layout = ImageLayout.of([values.shape], [0], "cpu")
    box = torch.tensor([[0.0, 0.0, 16.0, 16.0]], dtype=torch.float64)
    assert torch.equal(op(values.reshape(-1, 3), layout.start, layout.height, layout.width, box, 1.0, 16)[0], values)
    got = normalize_op(values.reshape(-1, 3), layout.start, layout.height, layout.width, box, 1.0, 16, torch.float32)
    rgb = np.arange(256, dtype=np.float64) / 255.0
    for c, (mean, std) in enumerate(zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))):
        np.testing.assert_array_equal(got[0, c].reshape(-1).numpy(), ((rgb - mean) / std).astype(np.float32))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("size,factor", SIZES)
def test_cpu_normalize_into_kernel_matches_reference(size, factor, dtype):
    frames = Frames([(23, 31), (90, 120)], 8, seed=size + 5)
    count = len(frames.boxes)
    crops = frames.normalized("reference", factor, size, dtype)
    # A slot of the tracker's (N, T, 3, S, S) templates (crops T * 3 * S * S apart), the middle one of three, and a
    # plain (N, 3, S, S) tensor.
    for slots, slot in [(3, 2), (3, 1), (1, 0)]:
        for name, where in masks(count, seed=size + slots + slot).items():
            templates = template_slots(count, slots, size, dtype, seed=size + slot)
            expected = templates.clone()
            expected[:, slot] = masked(crops, where, templates[:, slot])
            frames.into_op(factor, size, templates[:, slot], where)
            assert_identical_values(templates, expected, f"{dtype} size {size} slot {slot} of {slots}, mask {name}")


def test_cpu_normalize_into_kernel_no_boxes():
    pixels = torch.randint(0, 256, (12, 3), dtype=torch.uint8)
    empty = torch.zeros(0, dtype=torch.int64)
    out = torch.zeros(0, 2, 3, 8, 8)
    into_op(pixels, empty, empty, empty, torch.zeros(0, 4, dtype=torch.float64), 2.0, 8, out[:, -1],
            torch.zeros(0, dtype=torch.bool))


def test_cpu_kernel_several_images_in_one_pixel_table():
    frames = Frames([(30, 40), (55, 21), (1, 17), (64, 48)], 6, seed=5)
    got = frames.op(4.0, 48)
    assert_identical(got, frames.crops("reference", 4.0, 48), "several images")
    assert_not_blank(got)
    for n, (image_index, box) in enumerate(zip(frames.index, frames.boxes)):
        assert_identical(got[n:n + 1], crop_one(frames.images[image_index], box, 4.0, 48), f"box {n} cropped alone")


@pytest.mark.parametrize("size,factor", [(32, 2.0), (37, 4.0), (128, 4.0)])
def test_cpu_kernel_matches_opencv(size, factor):
    frames = Frames([(90, 120)], 16, seed=size)
    got = frames.op(factor, size)
    assert_not_blank(got)
    for n, box in enumerate(frames.boxes):
        expected, _ = opencv_crop(frames.images[0], box, factor, size)
        np.testing.assert_array_equal(got[n].numpy(), expected, err_msg=f"box {box}")


def test_cpu_kernel_rounds_corner_ties_to_even():
    # Integer boxes of odd size with an even crop side put the corner x + w/2 - c/2 on k + 0.5.
    rng = np.random.default_rng(7)
    image = torch.from_numpy(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
    boxes = torch.tensor([[x, y, w, h] for x, y, w, h in rng.integers(-10, 60, (40, 4)).tolist()], dtype=torch.float64)
    boxes[:, 2:] = boxes[:, 2:].abs() % 15 + 1
    geometry = crop_geometry(boxes, 2.0, 24)
    corner = boxes[:, 0] + 0.5 * boxes[:, 2] - geometry.side * 0.5
    assert (corner - corner.floor() == 0.5).sum() >= 10, "the boxes should make ties"
    layout = ImageLayout.of([image.shape], [0] * len(boxes), "cpu")
    got = op(image.reshape(-1, 3), layout.start, layout.height, layout.width, boxes, 2.0, 24)
    for n, box in enumerate(boxes.tolist()):
        expected, _ = opencv_crop(image.numpy(), box, 2.0, 24)
        np.testing.assert_array_equal(got[n].numpy(), expected, err_msg=f"box {box}")


def test_cpu_kernel_boxes_outside_the_image_give_zeros():
    image = torch.randint(1, 256, (40, 50, 3), dtype=torch.uint8)
    boxes = torch.tensor([[200.0, 10, 8, 8], [-60, -70, 10, 12], [10, 10, 10, 10]], dtype=torch.float64)
    layout = ImageLayout.of([image.shape], [0, 0, 0], "cpu")
    got = op(image.reshape(-1, 3), layout.start, layout.height, layout.width, boxes, 2.0, 24)
    assert got[:2].sum() == 0 and got[2].min() > 0


def test_cpu_kernel_no_boxes():
    pixels = torch.randint(0, 256, (12, 3), dtype=torch.uint8)
    empty = torch.zeros(0, dtype=torch.int64)
    assert op(pixels, empty, empty, empty, torch.zeros(0, 4, dtype=torch.float64), 2.0, 8).shape == (0, 8, 8, 3)


def test_cpu_opcheck():
    frames = Frames([(23, 31), (40, 12)], 3, seed=3)
    layout = frames.layout
    torch.library.opcheck(op, (frames.pixels, layout.start, layout.height, layout.width, frames.box_tensor, 2.0, 16))


def test_cpu_normalize_opcheck():
    frames = Frames([(23, 31), (40, 12)], 3, seed=3)
    layout = frames.layout
    torch.library.opcheck(normalize_op, (frames.pixels, layout.start, layout.height, layout.width, frames.box_tensor,
                                         2.0, 16, torch.bfloat16))


@pytest.mark.parametrize("slots", [1, 3])
def test_cpu_normalize_into_opcheck(slots):
    frames = Frames([(23, 31), (40, 12)], 3, seed=3)
    layout = frames.layout
    templates = template_slots(len(frames.boxes), slots, 16, torch.float16, seed=3)
    torch.library.opcheck(into_op, (frames.pixels, layout.start, layout.height, layout.width, frames.box_tensor, 2.0,
                                    16, templates[:, -1], masks(len(frames.boxes), seed=3)["random"]))


def test_public_api_accepts_non_contiguous_inputs():
    frames = Frames([(30, 40)], 5, seed=4)
    image = torch.from_numpy(frames.images[0])
    strided = torch.stack([image, image], dim=2)[:, :, 0]  # the same image through a non-contiguous view
    wide_boxes = torch.cat([frames.box_tensor, frames.box_tensor], dim=1)[:, :4]
    assert not strided.reshape(-1, 3).is_contiguous() and not wide_boxes.is_contiguous()
    with backend.use_backend("cuda", ops=("crop",)):
        got = crop_pixels(strided.reshape(-1, 3), frames.layout, wide_boxes, 4.0, 32)
    assert_identical(got, frames.crops("reference", 4.0, 32), "non-contiguous inputs")


def test_backend_choice_gives_the_same_crops():
    frames = Frames([(48, 64)], 8, seed=6)
    assert backend.select("crop", "cpu") == "cuda"  # auto picks the extension on CPU tensors too
    results = {}
    for name in ("reference", "cuda", "auto"):
        with backend.use_backend(name, ops=("crop",)):
            results[name] = crop_pixels(frames.pixels, frames.layout, frames.box_tensor, 4.0, 40)
    for name in ("cuda", "auto"):
        assert_identical(results[name], results["reference"], name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_backend_choice_gives_the_same_crops_into(dtype):
    frames = Frames([(48, 64)], 8, seed=6)
    count = len(frames.boxes)
    for name, where in masks(count, seed=6).items():
        results = {}
        for crop_backend in ("reference", "cuda", "auto"):
            templates = template_slots(count, 3, 40, dtype, seed=6)
            frames.into(crop_backend, 4.0, 40, templates[:, -1], where)
            results[crop_backend] = templates
        expected = template_slots(count, 3, 40, dtype, seed=6)
        expected[:, -1] = masked(frames.normalized("reference", 4.0, 40, dtype), where, expected[:, -1])
        for crop_backend, got in results.items():
            assert_identical_values(got, expected, f"{crop_backend}, mask {name}")


def test_cpu_torch_compile_fullgraph_runs_the_op():
    # aot_eager traces the op through its fake registration as inductor does, without C++ code generation.
    frames = Frames([(30, 40)], 4, seed=8)
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(str(gm.graph))
        return lookup_backend("aot_eager")(gm, example_inputs)

    torch._dynamo.reset()
    compiled = torch.compile(lambda pixels, boxes: crop_pixels(pixels, frames.layout, boxes, 2.0, 24),
                             fullgraph=True, backend=recording_backend)
    with backend.use_backend("cuda", ops=("crop",)):
        got = compiled(frames.pixels, frames.box_tensor)
    assert any("crop_resize" in graph for graph in graphs)
    assert_identical(got, frames.crops("reference", 2.0, 24), "compiled")


def _layout_args(n=2, P=12):
    pixels = torch.randint(0, 256, (P, 3), dtype=torch.uint8)
    layout = [torch.zeros(n, dtype=torch.int64), torch.full((n,), 3, dtype=torch.int64),
              torch.full((n,), 4, dtype=torch.int64)]
    boxes = torch.tensor([[0.5, 0.5, 2.0, 2.0]] * n, dtype=torch.float64)
    return pixels, layout, boxes


def _with(position, value):
    pixels, (start, height, width), boxes = _layout_args()
    args = [pixels, start, height, width, boxes, 2.0, 8]
    args[position] = value
    return args


@pytest.mark.parametrize("args,match", [
    (_with(0, torch.zeros(12, 4, dtype=torch.uint8)), r"pixels must have shape \(P, 3\).*got \[12, 4\]"),
    (_with(0, torch.zeros(12, 3)), "pixels must be uint8, got Float"),
    (_with(0, torch.zeros(3, 12, dtype=torch.uint8).t()), r"pixels must be contiguous"),
    (_with(4, torch.zeros(2, 5, dtype=torch.float64)), r"boxes must have shape \(N, 4\)"),
    (_with(4, torch.zeros(2, 4)), "boxes must be float64, got Float"),
    (_with(1, torch.zeros(3, dtype=torch.int64)), r"start must have shape \(N,\) with N = 2.*got \[3\]"),
    (_with(2, torch.full((2,), 3, dtype=torch.int32)), "height must be int64, got Int"),
    (_with(3, torch.full((2, 2), 4, dtype=torch.int64)[:, 0]), "width must be contiguous"),
    (_with(6, 0), r"size must be in \[1, 16384\], got 0"),
    (_with(5, -1.0), "factor must be a positive finite number"),
    (_with(5, float("nan")), "factor must be a positive finite number"),
    (_with(2, torch.tensor([3, 0])), "image of box 1 is empty: height 0, width 4"),
    (_with(1, torch.tensor([0, 1])), r"image of box 1 \(start 1, 3x4\) does not fit in the 12 pixels"),
    (_with(1, torch.tensor([-1, 0])), r"image of box 0 \(start -1, 3x4\) does not fit"),
])
def test_op_rejects_bad_input_with_a_message(args, match):
    with pytest.raises(RuntimeError, match=match):
        op(*args)
    with pytest.raises(RuntimeError, match="crop_normalize: " + match):  # the same checks, naming the op
        normalize_op(*args, torch.float32)
    with pytest.raises(RuntimeError, match="crop_normalize_into: " + match):
        into_op(*args, torch.zeros(2, 3, 8, 8), torch.ones(2, dtype=torch.bool))


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8, torch.complex64], ids=str)
def test_normalize_op_rejects_non_floating_dtypes(dtype):
    with pytest.raises(RuntimeError, match="dtype must be float64, float32, float16 or bfloat16"):
        normalize_op(*_with(6, 8), dtype)


def _into_with(out=None, where=None):
    """crop_normalize_into's arguments for _layout_args' two boxes, size 8, with ``out`` or ``where`` replaced."""
    return [*_with(6, 8), torch.zeros(2, 3, 8, 8) if out is None else out,
            torch.ones(2, dtype=torch.bool) if where is None else where]


@pytest.mark.parametrize("args,match", [
    (_into_with(out=torch.zeros(3, 3, 8, 8)),
     r"out must have shape \(N, 3, size, size\) with N = 2 \(one crop per box\) and size = 8, got \[3, 3, 8, 8\]"),
    (_into_with(out=torch.zeros(2, 3, 8, 7)), r"out must have shape \(N, 3, size, size\).*got \[2, 3, 8, 7\]"),
    (_into_with(out=torch.zeros(2, 8, 8)), r"out must have shape \(N, 3, size, size\).*got \[2, 8, 8\]"),
    (_into_with(out=torch.zeros(2, 3, 8, 8, dtype=torch.int32)),
     "out must be float64, float32, float16 or bfloat16, got Int"),
    (_into_with(out=torch.zeros(2, 3, 8, 8, dtype=torch.uint8)), "out must be .* got Byte"),
    (_into_with(out=torch.zeros(2, 8, 8, 3).permute(0, 3, 1, 2)),
     r"out must hold each crop's \(3, size, size\) block contiguous.*got strides \[192, 1, 24, 3\]"),
    (_into_with(out=torch.zeros(2, 3, 8, 16)[..., ::2]), r"out must hold .*got strides \[384, 128, 16, 2\]"),
    (_into_with(out=torch.zeros(256).as_strided((2, 3, 8, 8), (64, 64, 8, 1))),  # crops overlapping
     r"out must hold .* the crops apart.*got strides \[64, 64, 8, 1\]"),
    (_into_with(where=torch.ones(2, dtype=torch.uint8)), "where must be bool, got Byte"),
    (_into_with(where=torch.ones(2, dtype=torch.int64)), "where must be bool, got Long"),
    (_into_with(where=torch.ones(3, dtype=torch.bool)),
     r"where must have shape \(N,\) with N = 2 \(one entry per box\), got \[3\]"),
    (_into_with(where=torch.ones(2, 1, dtype=torch.bool)), r"where must have shape \(N,\).*got \[2, 1\]"),
    (_into_with(where=torch.ones(2, 2, dtype=torch.bool)[:, 0]), "where must be contiguous"),
])
def test_normalize_into_op_rejects_bad_output_or_mask(args, match):
    with pytest.raises(RuntimeError, match="crop_normalize_into: " + match):
        into_op(*args)


def test_missing_extension_falls_back_and_explains_how_to_build():
    script = """
import sys
sys.modules["actrack_fast._C"] = None  # as if the extension had not been built
import torch
from actrack_fast import backend, crop_op
from actrack_fast.preprocessing import crop_and_resize
assert crop_op._C is None and backend.select("crop", "cpu") == "reference"
crops, _ = crop_and_resize(torch.zeros(8, 8, 3, dtype=torch.uint8), [[1.0, 1, 3, 3]], 2.0, 4)
assert crops.shape == (1, 4, 4, 3)
try:
    backend.select("crop", "cpu", "cuda")
except RuntimeError as error:
    print(error)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "not built" in result.stdout and "pip install --no-build-isolation" in result.stdout


# GPU: the extension's CUDA kernel


def _cuda_frames(count, seed, shapes=((480, 640),)):
    return Frames(list(shapes), count, seed=seed, device="cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("size,factor", [(256, 4.0), (128, 2.0), (384, 5.0), (37, 2.5), (1, 2.0)])
def test_cuda_kernel_matches_cpu_kernel_and_reference(size, factor):
    frames = _cuda_frames(256, seed=size)
    got = frames.op(factor, size)
    assert got.device.type == "cuda"
    assert_not_blank(got)
    cpu = frames.to("cpu")
    assert_identical(got, cpu.op(factor, size), "CUDA kernel vs CPU kernel")
    assert_identical(got, frames.crops("reference", factor, size), "CUDA kernel vs reference on the GPU")
    if size <= 256:  # the CPU reference of 256 crops of 384 pixels takes seconds; the kernels agree above
        assert_identical(got, cpu.crops("reference", factor, size), "CUDA kernel vs reference on the CPU")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("size,factor", [(256, 4.0), (128, 2.0), (37, 2.5)])
def test_cuda_normalize_kernel_matches_cpu_kernel_and_reference(size, factor, dtype):
    frames = _cuda_frames(64, seed=size + 1)
    got = frames.normalize_op(factor, size, dtype)
    assert got.device.type == "cuda" and got.unique().numel() > 3
    assert_identical_values(got, frames.to("cpu").normalize_op(factor, size, dtype), "CUDA kernel vs CPU kernel")
    assert_identical_values(got, frames.normalized("reference", factor, size, dtype), "CUDA kernel vs reference")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("size,factor", [(128, 2.0), (256, 4.0), (37, 2.5), (1, 2.0)])
def test_cuda_normalize_into_kernel_matches_cpu_kernel_and_reference(size, factor, dtype):
    frames = _cuda_frames(64, seed=size + 2)
    cpu = frames.to("cpu")
    crops = frames.normalized("reference", factor, size, dtype)
    for name, where in masks(64, seed=size, device="cuda").items():
        templates = template_slots(64, 3, size, dtype, seed=size, device="cuda")
        on_cpu = templates.cpu()
        expected = templates.clone()
        expected[:, -1] = masked(crops, where, templates[:, -1])
        frames.into_op(factor, size, templates[:, -1], where)
        cpu.into_op(factor, size, on_cpu[:, -1], where.cpu())
        assert_identical_values(templates, on_cpu, f"CUDA kernel vs CPU kernel, mask {name}")
        assert_identical_values(templates, expected, f"CUDA kernel vs reference on the GPU, mask {name}")


@pytest.mark.cuda
def test_cuda_kernel_several_images_and_opencv():
    frames = _cuda_frames(20, seed=11, shapes=((480, 640), (1, 300), (300, 1), (97, 131)))
    got = frames.op(4.0, 256)
    assert_identical(got, frames.crops("reference", 4.0, 256), "several images")
    for n, (image_index, box) in enumerate(zip(frames.index, frames.boxes)):
        expected, _ = opencv_crop(frames.images[image_index], box, 4.0, 256)
        np.testing.assert_array_equal(got[n].cpu().numpy(), expected, err_msg=f"box {box}")


@pytest.mark.cuda
def test_cuda_kernel_more_boxes_than_one_grid_column():
    # 70000 boxes > 65535 blocks along the grid's y axis: blocks loop over boxes.
    frames = _cuda_frames(70000, seed=12, shapes=((48, 64),))
    got = frames.op(2.0, 3)
    assert_identical(got, frames.crops("reference", 2.0, 3), "70000 boxes")


@pytest.mark.cuda
def test_cuda_normalize_into_more_boxes_than_one_grid_column():
    frames = _cuda_frames(70000, seed=12, shapes=((48, 64),))
    where = masks(70000, seed=12, device="cuda")["random"]
    templates = template_slots(70000, 2, 3, torch.float32, seed=12, device="cuda")
    expected = templates.clone()
    expected[:, -1] = masked(frames.normalized("reference", 2.0, 3, torch.float32), where, templates[:, -1])
    frames.into_op(2.0, 3, templates[:, -1], where)
    assert_identical_values(templates, expected, "70000 boxes")


@pytest.mark.cuda
def test_cuda_graph_replays_new_frames_and_boxes():
    frames = _cuda_frames(64, seed=13)
    pixels, boxes = frames.pixels.clone(), frames.box_tensor.clone()
    outputs = {}

    def step():
        with backend.use_backend("cuda", ops=("crop",)):
            outputs["search"] = crop_pixels(pixels, frames.layout, boxes, 4.0, 256)
            outputs["template"] = crop_pixels(pixels, frames.layout, boxes, 2.0, 128)
            outputs["normalized"] = crop_normalized(pixels, frames.layout, boxes, 4.0, 256, torch.bfloat16)

    graph = capture_graph(step)
    for seed in (14, 15):
        other = _cuda_frames(64, seed=seed)
        pixels.copy_(other.pixels)
        boxes.copy_(other.box_tensor)
        graph.replay()
        torch.cuda.synchronize()
        assert_identical(outputs["search"], other.crops("reference", 4.0, 256), f"search, replay {seed}")
        assert_identical(outputs["template"], other.crops("reference", 2.0, 128), f"template, replay {seed}")
        assert_identical_values(outputs["normalized"], other.normalized("reference", 4.0, 256, torch.bfloat16),
                                f"normalised search, replay {seed}")


@pytest.mark.cuda
def test_cuda_graph_replays_normalize_into_with_changing_masks():
    frames = _cuda_frames(64, seed=19)
    pixels, boxes = frames.pixels.clone(), frames.box_tensor.clone()
    where = torch.zeros(64, dtype=torch.bool, device="cuda")  # the warm-up call then changes nothing
    templates = template_slots(64, 3, 128, torch.bfloat16, seed=19, device="cuda")

    def step():
        with backend.use_backend("cuda", ops=("crop",)):
            crop_normalized_into(pixels, frames.layout, boxes, 2.0, 128, templates[:, -1], where)

    graph = capture_graph(step)
    for seed, mask in [(20, "random"), (21, "all"), (22, "none"), (23, "random")]:
        other = _cuda_frames(64, seed=seed)
        pixels.copy_(other.pixels)
        boxes.copy_(other.box_tensor)
        where.copy_(masks(64, seed=seed, device="cuda")[mask])
        expected = templates.clone()
        expected[:, -1] = masked(other.normalized("reference", 2.0, 128, torch.bfloat16), where, templates[:, -1])
        graph.replay()
        torch.cuda.synchronize()
        assert_identical_values(templates, expected, f"replay {seed}, mask {mask}")


@pytest.mark.cuda
def test_cuda_torch_compile_fullgraph():
    frames = _cuda_frames(16, seed=16)
    torch._dynamo.reset()
    compiled = torch.compile(lambda pixels, boxes: crop_pixels(pixels, frames.layout, boxes, 4.0, 256),
                             fullgraph=True)
    with backend.use_backend("cuda", ops=("crop",)):
        got = compiled(frames.pixels, frames.box_tensor)
    assert_identical(got, frames.crops("reference", 4.0, 256), "compiled")


@pytest.mark.cuda
def test_cuda_opcheck():
    frames = _cuda_frames(4, seed=18, shapes=((48, 64), (30, 20)))
    layout = frames.layout
    args = (frames.pixels, layout.start, layout.height, layout.width, frames.box_tensor, 4.0, 32)
    torch.library.opcheck(op, args)
    torch.library.opcheck(normalize_op, (*args, torch.float16))
    templates = template_slots(len(frames.boxes), 3, 32, torch.float16, seed=18, device="cuda")
    where = masks(len(frames.boxes), seed=18, device="cuda")["random"]
    torch.library.opcheck(into_op, (*args, templates[:, -1], where))


@pytest.mark.cuda
def test_cuda_op_rejects_tensors_on_other_devices():
    frames = _cuda_frames(2, seed=17)
    layout = frames.layout
    with pytest.raises(RuntimeError, match="boxes is on cpu but this kernel runs on cuda tensors"):
        op(frames.pixels, layout.start, layout.height, layout.width, frames.box_tensor.cpu(), 2.0, 8)
    where = torch.ones(2, dtype=torch.bool, device="cuda")
    with pytest.raises(RuntimeError, match="crop_normalize_into: out is on cpu but this kernel runs on cuda tensors"):
        frames.into_op(2.0, 8, torch.zeros(2, 3, 8, 8), where)
    with pytest.raises(RuntimeError, match="crop_normalize_into: where is on cpu but this kernel runs on cuda"):
        frames.into_op(2.0, 8, torch.zeros(2, 3, 8, 8, device="cuda"), where.cpu())
