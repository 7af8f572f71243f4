"""The compiled box ops (csrc/, backend ``"cuda"`` of op ``"boxes"``) against the torch references:
``track_boxes`` against ``clip_boxes(map_boxes_back(pred, previous, crop_geometry(previous, factor, size), size),
...)``, bit-identical float64 boxes, signs of zero included; ``advance_targets`` (next boxes, confidences, frame
counts and update decisions, written into the state) against :func:`actrack_fast.frame_step.advance_targets`'s
torch code, every output bit-identical.

CPU tests run the extension's C++ kernel (CI builds it); GPU tests (``cuda`` marker) run its CUDA kernel against
the C++ kernel and the reference on both devices, inside a CUDA graph and under ``torch.compile``. Previous boxes
are fractional and integer (exact square roots: crop sides without rounding), tiny and huge, inside, across and
outside images of 1 to 1920 pixels; predictions span [-0.1, 1.1], a third of them decoder tokens k / 3999.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch._dynamo.backends.registry import lookup_backend

from actrack_fast import backend, xcorr_op
from actrack_fast.cuda_graphs import capture_graph
from actrack_fast.decoding import tokens_to_boxes
from actrack_fast.frame_step import TargetState, advance_targets
from actrack_fast.presets import TrackerSettings
from actrack_fast.preprocessing import ImageLayout, clip_boxes, crop_geometry, map_boxes_back, track_boxes

if xcorr_op._C is None and os.environ.get("ACTRACK_NO_EXT") == "1":
    pytest.skip("the extension was skipped on purpose (ACTRACK_NO_EXT=1)", allow_module_level=True)

op = torch.ops.actrack_fast.track_boxes
advance_op = torch.ops.actrack_fast.advance_targets

BINS = 4000
# No side equals a margin under test (0, 10): there torch's reference itself gives -0 or +0 depending on where a
# box sits in the tensor (csrc/boxes.h, minimum).
IMAGE_SIDES = (1, 7, 23, 96, 240, 480, 641, 1080, 1920)
# (size, factor): ACTrack's search crops (256, 4) and (384, 4), SeqTrack's template and other factors.
SETTINGS = [(128, 2.0), (256, 4.0), (384, 4.0), (256, 5.0), (384, 2.0), (128, 5.0)]


class Targets:
    """N targets: predictions, previous boxes and their images' sides, on ``device``."""

    def __init__(self, count, seed, device="cpu"):
        rng = np.random.default_rng(seed)
        height = rng.choice(IMAGE_SIDES, count)
        width = rng.choice(IMAGE_SIDES, count)
        # Sides log-uniform from 1e-4 to 20 image sides; centres inside, across and outside the image.
        w = width * 10 ** rng.uniform(-4, 1.3, count)
        h = height * 10 ** rng.uniform(-4, 1.3, count)
        x = rng.uniform(-width, 2 * width) - w / 2
        y = rng.uniform(-height, 2 * height) - h / 2
        kind = np.arange(count) % 4
        integer = kind >= 2  # integers; squares (kind 3) have exact square roots, so ceil meets an integer
        x[integer], y[integer] = np.round(x[integer]), np.round(y[integer])
        w[integer] = np.maximum(1, np.round(np.minimum(w[integer], 3 * width[integer])))
        h[integer] = np.maximum(1, np.round(np.minimum(h[integer], 3 * height[integer])))
        h[kind == 3] = w[kind == 3]
        pred = torch.from_numpy(rng.uniform(-0.1, 1.1, (count, 4)).astype(np.float32))
        tokens = torch.from_numpy(rng.integers(0, BINS, (count, 4)))
        pred = torch.where(torch.from_numpy(rng.random((count, 4)) < 1 / 3), tokens_to_boxes(tokens, BINS), pred)
        self.pred = pred.to(device)
        self.previous = torch.from_numpy(np.stack([x, y, w, h], axis=1)).to(device)
        self.layout = ImageLayout(torch.zeros(count, dtype=torch.int64, device=device),
                                  torch.from_numpy(height).to(device), torch.from_numpy(width).to(device))

    def to(self, device):
        moved = Targets.__new__(Targets)
        moved.pred, moved.previous = self.pred.to(device), self.previous.to(device)
        moved.layout = ImageLayout(*(t.to(device) for t in (self.layout.start, self.layout.height, self.layout.width)))
        return moved

    def reference(self, factor, size, margin):
        """The expression the op replaces, spelled out (not through track_boxes)."""
        geometry = crop_geometry(self.previous, factor, size)
        return clip_boxes(map_boxes_back(self.pred, self.previous, geometry, size), self.layout.height,
                          self.layout.width, margin)

    def op(self, factor, size, margin):
        return op(self.pred, self.previous, self.layout.height, self.layout.width, factor, size, margin)

    def boxes(self, boxes_backend, factor, size, margin):
        """track_boxes with the given ``boxes`` backend."""
        with backend.use_backend(boxes_backend, ops=("boxes",)):
            return track_boxes(self.pred, self.previous, self.layout, factor, size, margin)


def assert_identical(got, expected, what):
    """Bit for bit: the same float64 values, signs of zero included; NaN never passes."""
    assert got.dtype == torch.float64 and got.shape == expected.shape, what
    got, expected = got.cpu(), expected.cpu()
    assert torch.isfinite(expected).all() and torch.isfinite(got).all(), what
    assert torch.equal(got, expected), f"{what}: {(got != expected).sum().item()} of {got.numel()} values differ"
    differ = got.view(torch.int64) != expected.view(torch.int64)
    assert not differ.any(), f"{what}: {differ.sum().item()} values differ in the sign of zero"


class Step:
    """What ``advance_targets`` takes for N targets: their state (boxes, frame counts from 0 to 3 intervals,
    confidences), predictions and token probabilities, with a threshold some confidences exceed."""

    def __init__(self, count, seed, device="cpu", interval=5):
        rng = np.random.default_rng(seed)
        self.targets = Targets(count, seed, device)
        self.probs = torch.from_numpy(rng.uniform(0.0, 0.6, (count, 4)).astype(np.float32)).to(device)
        frames = torch.from_numpy(rng.integers(0, 3 * interval, count)).to(device)
        self.state = TargetState(self.targets.previous.clone(), frames,
                                 torch.full((count,), float("nan"), dtype=torch.float64, device=device), None)
        self.settings = TrackerSettings(update_interval=interval, update_threshold=12.0, margin=10.0)

    def run(self, boxes_backend):
        """(boxes, frames, confidences, due) after advance_targets with ``boxes_backend`` on a copy of the state."""
        state = TargetState(*(t.clone() for t in self.state.tensors()[:3]), None)
        with backend.use_backend(boxes_backend, ops=("boxes",)):
            due = advance_targets(state, self.targets.pred, self.probs, self.targets.layout, 4.0, 256, self.settings)
        return state.boxes, state.frames, state.confidences, due


def assert_same_step(got, expected, what):
    boxes, frames, confidences, due = got
    assert_identical(boxes, expected[0], f"{what}: boxes")
    assert_identical(confidences, expected[2], f"{what}: confidences")
    assert frames.dtype == torch.int64 and torch.equal(frames.cpu(), expected[1].cpu()), f"{what}: frames"
    assert due.dtype == torch.bool and torch.equal(due.cpu(), expected[3].cpu()), f"{what}: due"


def assert_every_clip_branch(boxes, layout, margin):
    """Guards the comparisons against inputs that clip nothing: some boxes pass unclipped, some are clipped at
    each border, some shrink to the margin."""
    x, y, w, h = boxes.cpu().unbind(-1)
    width, height = layout.width.cpu().double(), layout.height.cpu().double()
    inside = (x > 0) & (y > 0) & (x + w < width) & (y + h < height) & (w > margin) & (h > margin)
    for what, hit in [("inside", inside), ("left", x == 0), ("top", y == 0), ("right", x + w >= width),
                      ("bottom", y + h >= height), ("margin-sized", (w == margin) | (h == margin))]:
        assert hit.sum() >= 5, f"too few {what} boxes: {hit.sum().item()}"


# CPU: the extension's C++ kernel


@pytest.mark.parametrize("margin", [0.0, 10.0])
@pytest.mark.parametrize("size,factor", SETTINGS)
def test_cpu_op_matches_reference_bit_for_bit(size, factor, margin):
    targets = Targets(4000, seed=size + int(factor) * 1000 + int(margin))
    got = targets.op(factor, size, margin)
    assert_identical(got, targets.reference(factor, size, margin), f"size {size} factor {factor} margin {margin}")
    assert_every_clip_branch(got, targets.layout, margin)


def test_cpu_op_matches_reference_on_degenerate_boxes():
    # Zero-area previous boxes (crop side 0: resize factor inf), signed-zero predictions, exact 0 and 1.
    targets = Targets(64, seed=21)
    targets.previous[::4, 2] = 0.0
    targets.previous[1::4, 3] = 0.0
    targets.pred[::3, :2] = -0.0
    targets.pred[1::3, 2:] = -0.0
    targets.pred[2::5] = 1.0
    targets.pred[3::5] = 0.0
    for factor, size, margin in [(4.0, 256, 0.0), (2.0, 128, 10.0)]:
        assert_identical(targets.op(factor, size, margin), targets.reference(factor, size, margin),
                         f"degenerate, margin {margin}")


@pytest.mark.parametrize("margin", [0.0, 10.0, 2.5])
def test_clipped_boxes_stay_inside_the_image_with_the_margin(margin):
    targets = Targets(3000, seed=22)
    boxes = targets.op(4.0, 256, margin)
    x, y, w, h = boxes.unbind(-1)
    width, height = targets.layout.width.double(), targets.layout.height.double()
    fits = (width >= margin) & (height >= margin)  # an image narrower than the margin cannot hold it
    assert fits.sum() > 1500
    assert ((w >= margin) & (h >= margin)).all()
    assert ((x >= 0) & (y >= 0) & (x <= width - margin) & (y <= height - margin))[fits].all()
    slack = 1e-9 * (width + height)  # x + w rounds once more than the clipped right edge
    assert ((x + w <= width + slack) & (y + h <= height + slack))[fits].all()
    # A box that left the image through its right side becomes a margin-sized box at the right edge.
    mapped = map_boxes_back(targets.pred, targets.previous, crop_geometry(targets.previous, 4.0, 256), 256)
    gone = fits & (mapped[:, 0] >= width) & (mapped[:, 2] >= 0)
    assert gone.sum() >= 10
    assert (x[gone] == (width - margin)[gone]).all() and (w[gone] == margin).all()


def test_cpu_op_no_boxes():
    empty = torch.zeros(0, dtype=torch.int64)
    got = op(torch.zeros(0, 4), torch.zeros(0, 4, dtype=torch.float64), empty, empty, 4.0, 256, 0.0)
    assert got.shape == (0, 4) and got.dtype == torch.float64


def test_cpu_opcheck():
    targets = Targets(16, seed=23)
    torch.library.opcheck(op, (targets.pred, targets.previous, targets.layout.height, targets.layout.width, 4.0, 256,
                               10.0))


def test_backend_choice_gives_the_same_boxes():
    targets = Targets(300, seed=24)
    assert backend.select("boxes", "cpu") == "cuda"  # auto picks the extension on CPU tensors too
    results = {name: targets.boxes(name, 4.0, 256, 10.0) for name in ("reference", "cuda", "auto")}
    for name in ("reference", "cuda", "auto"):
        assert_identical(results[name], targets.reference(4.0, 256, 10.0), name)


def test_cpu_advance_targets_matches_reference_bit_for_bit():
    step = Step(3000, seed=40)
    expected = step.run("reference")
    assert_same_step(step.run("cuda"), expected, "C++ kernel")
    boxes, frames, confidences, due = expected
    assert torch.equal(frames, step.state.frames + 1)
    # The decision takes both branches of both conditions.
    on_interval = frames % step.settings.update_interval == 0
    confident = confidences > step.settings.update_threshold
    for a in (True, False):
        for b in (True, False):
            assert ((on_interval == a) & (confident == b)).sum() >= 20, (a, b)
    assert torch.equal(due, on_interval & confident)


def test_cpu_advance_targets_opcheck():
    step = Step(16, seed=41)
    state, targets = step.state, step.targets
    torch.library.opcheck(advance_op, (targets.pred, step.probs, state.boxes.clone(), state.frames.clone(),
                                       state.confidences.clone(), targets.layout.height, targets.layout.width, 4.0,
                                       256, 10.0, 5, 12.0))


def test_public_api_accepts_non_contiguous_and_float64_predictions():
    targets = Targets(50, seed=25)
    wide_pred = torch.stack([targets.pred, targets.pred], dim=2).reshape(-1, 8).double()[:, ::2]
    wide_previous = torch.cat([targets.previous, targets.previous], dim=1)[:, 4:]
    assert not wide_pred.is_contiguous() and not wide_previous.is_contiguous()
    with backend.use_backend("cuda", ops=("boxes",)):
        got = track_boxes(wide_pred, wide_previous, targets.layout, 4.0, 256, 10.0)
    assert_identical(got, targets.reference(4.0, 256, 10.0), "non-contiguous inputs")


def test_cpu_torch_compile_fullgraph_runs_the_op():
    # aot_eager traces the op through its fake registration as inductor does, without C++ code generation.
    targets = Targets(40, seed=26)
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(str(gm.graph))
        return lookup_backend("aot_eager")(gm, example_inputs)

    torch._dynamo.reset()
    compiled = torch.compile(lambda pred, previous: track_boxes(pred, previous, targets.layout, 4.0, 256, 10.0),
                             fullgraph=True, backend=recording_backend)
    with backend.use_backend("cuda", ops=("boxes",)):
        got = compiled(targets.pred, targets.previous)
    assert any("track_boxes" in graph for graph in graphs)
    assert_identical(got, targets.reference(4.0, 256, 10.0), "compiled")


def _args(n=2):
    side = torch.full((n,), 48, dtype=torch.int64)
    return [torch.rand(n, 4), torch.tensor([[3.0, 4.0, 10.0, 12.0]] * n, dtype=torch.float64), side, side.clone(),
            4.0, 256, 10.0]


def _with(position, value):
    args = _args()
    args[position] = value
    return args


@pytest.mark.parametrize("args,match", [
    (_with(0, torch.rand(2, 5)), r"pred must have shape \(N, 4\) \(cx, cy, w, h.*got \[2, 5\]"),
    (_with(0, torch.rand(2, 4, dtype=torch.float64)), "pred must be Float, got Double"),
    (_with(0, torch.rand(4, 2).t()), "pred must be contiguous"),
    (_with(1, torch.rand(3, 4, dtype=torch.float64)), r"previous must have shape \(N, 4\) \(x, y, w, h\) with N = 2"),
    (_with(1, torch.rand(2, 4)), "previous must be Double, got Float"),
    (_with(2, torch.full((3,), 48, dtype=torch.int64)), r"height must have shape \(N,\) with N = 2.*got \[3\]"),
    (_with(3, torch.full((2,), 48, dtype=torch.int32)), "width must be int64, got Int"),
    (_with(3, torch.full((2, 2), 48, dtype=torch.int64)[:, 0]), "width must be contiguous"),
    (_with(5, 0), r"size must be >= 1, got 0"),
    (_with(4, 0.0), "factor must be a positive finite number"),
    (_with(4, float("inf")), "factor must be a positive finite number"),
    (_with(6, -1.0), "margin must be a finite number >= 0"),
    (_with(6, float("nan")), "margin must be a finite number >= 0"),
])
def test_op_rejects_bad_input_with_a_message(args, match):
    with pytest.raises(RuntimeError, match=match):
        op(*args)


def _advance_args(n=2):
    pred, previous, height, width, factor, size, margin = _args(n)
    return [pred, torch.rand(n, 4), previous, torch.zeros(n, dtype=torch.int64),
            torch.zeros(n, dtype=torch.float64), height, width, factor, size, margin, 5, 12.0]


def _advance_with(position, value):
    args = _advance_args()
    args[position] = value
    return args


@pytest.mark.parametrize("args,match", [
    (_advance_with(0, torch.rand(2, 4, dtype=torch.float64)), "advance_targets: pred must be Float, got Double"),
    (_advance_with(1, torch.rand(3, 4)), r"probs must have shape \(N, 4\) \(the 4 tokens' probabilities\) with N = 2"),
    (_advance_with(1, torch.rand(2, 4, dtype=torch.float64)), "probs must be Float, got Double"),
    (_advance_with(2, torch.rand(2, 4)), "advance_targets: previous must be Double, got Float"),
    (_advance_with(3, torch.zeros(2, dtype=torch.int32)), "frames must be int64, got Int"),
    (_advance_with(3, torch.zeros(3, dtype=torch.int64)), r"frames must have shape \(N,\) with N = 2"),
    (_advance_with(4, torch.zeros(2)), "confidences must be Double, got Float"),
    (_advance_with(4, torch.zeros(2, 2, dtype=torch.float64)[:, 0]), "confidences must be contiguous"),
    (_advance_with(4, torch.zeros(1, dtype=torch.float64)), r"confidences must have shape \(N,\) with N = 2"),
    (_advance_with(9, -1.0), "advance_targets: margin must be a finite number >= 0"),
    (_advance_with(10, 0), "interval must be >= 1, got 0"),
    (_advance_with(11, float("nan")), "threshold must be finite"),
])
def test_advance_op_rejects_bad_input_with_a_message(args, match):
    with pytest.raises(RuntimeError, match=match):
        advance_op(*args)


def test_missing_extension_falls_back_to_the_reference():
    script = """
import sys
sys.modules["actrack_fast._C"] = None  # as if the extension had not been built
import torch
from actrack_fast import backend
from actrack_fast.preprocessing import ImageLayout, track_boxes
assert backend.select("boxes", "cpu") == "reference"
side = torch.tensor([48])
boxes = track_boxes(torch.tensor([[0.5, 0.5, 0.25, 0.25]]), torch.tensor([[8.0, 8, 8, 8]], dtype=torch.float64),
                    ImageLayout(torch.tensor([0]), side, side), 4.0, 256, 0.0)
print(boxes.tolist())
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # The crop (side 32 around the centre 12) maps the prediction's centre to 12 and its side 0.25 to 8 pixels.
    assert result.stdout.strip() == "[[8.0, 8.0, 8.0, 8.0]]"


# GPU: the extension's CUDA kernel


@pytest.mark.cuda
@pytest.mark.parametrize("size,factor,margin", [(256, 4.0, 10.0), (384, 4.0, 0.0), (128, 2.0, 10.0)])
def test_cuda_op_matches_cpu_op_and_reference(size, factor, margin):
    targets = Targets(100_000, seed=size + int(margin), device="cuda")
    got = targets.op(factor, size, margin)
    assert got.device.type == "cuda"
    cpu = targets.to("cpu")
    assert_identical(got, cpu.op(factor, size, margin), "CUDA kernel vs CPU kernel")
    assert_identical(got, cpu.reference(factor, size, margin), "CUDA kernel vs reference on the CPU")
    assert_identical(got, targets.reference(factor, size, margin), "CUDA kernel vs reference on the GPU")
    assert_every_clip_branch(got, targets.layout, margin)


@pytest.mark.cuda
def test_cuda_advance_targets_matches_cpu_kernel_and_reference():
    step = Step(100_000, seed=42, device="cuda")
    got = step.run("cuda")
    assert got[0].device.type == "cuda"
    cpu = Step(100_000, seed=42)
    assert_same_step(got, cpu.run("cuda"), "CUDA kernel vs CPU kernel")
    assert_same_step(got, cpu.run("reference"), "CUDA kernel vs reference on the CPU")
    assert_same_step(got, step.run("reference"), "CUDA kernel vs reference on the GPU")
    assert got[3].any() and not got[3].all()


@pytest.mark.cuda
def test_cuda_graph_replays_new_boxes():
    targets = Targets(1000, seed=31, device="cuda")
    pred, previous = targets.pred.clone(), targets.previous.clone()
    outputs = {}

    def step():
        outputs["boxes"] = track_boxes(pred, previous, targets.layout, 4.0, 256, 10.0)

    with backend.use_backend("cuda", ops=("boxes",)):
        graph = capture_graph(step)
    for seed in (32, 33):
        other = Targets(1000, seed=seed, device="cuda")
        other.layout = targets.layout
        pred.copy_(other.pred)
        previous.copy_(other.previous)
        graph.replay()
        torch.cuda.synchronize()
        assert_identical(outputs["boxes"], other.to("cpu").reference(4.0, 256, 10.0), f"replay {seed}")


@pytest.mark.cuda
def test_cuda_torch_compile_fullgraph():
    targets = Targets(1000, seed=34, device="cuda")
    torch._dynamo.reset()
    compiled = torch.compile(lambda pred, previous: track_boxes(pred, previous, targets.layout, 4.0, 256, 10.0),
                             fullgraph=True)
    with backend.use_backend("cuda", ops=("boxes",)):
        got = compiled(targets.pred, targets.previous)
    assert_identical(got, targets.to("cpu").reference(4.0, 256, 10.0), "compiled")


@pytest.mark.cuda
def test_cuda_opcheck():
    targets = Targets(16, seed=35, device="cuda")
    torch.library.opcheck(op, (targets.pred, targets.previous, targets.layout.height, targets.layout.width, 4.0, 256,
                               10.0))
    step = Step(16, seed=43, device="cuda")
    state = step.state
    torch.library.opcheck(advance_op, (targets.pred, step.probs, state.boxes.clone(), state.frames.clone(),
                                       state.confidences.clone(), targets.layout.height, targets.layout.width, 4.0,
                                       256, 10.0, 5, 12.0))


@pytest.mark.cuda
def test_cuda_op_rejects_tensors_on_other_devices():
    targets = Targets(2, seed=36, device="cuda")
    with pytest.raises(RuntimeError, match="previous is on cpu but this kernel runs on cuda tensors"):
        op(targets.pred, targets.previous.cpu(), targets.layout.height, targets.layout.width, 4.0, 256, 10.0)
