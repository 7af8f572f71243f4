"""Frames-per-second measurement of the tracker and its parts.

``benchmarks/test_fps.py`` (pytest-benchmark) and ``actrack-fast bench`` both run :func:`prepare`/:func:`measure`
and print :func:`markdown_table`, so the suite and the command line measure and report the same thing.

Components (one timed call, for ``batch`` targets at once):

* ``crop``: search crop and normalisation around each target's box in a frame already on the device;
* ``additive``: the additive net on search and template crops (``model.additive``);
* ``correlation``: the depthwise correlation op at the additive net's shapes (B*T planes, width C_a);
* ``encoder``: ``model.encode`` (additive net + ViT) on crops;
* ``decoder``: ``model.decode`` of the four coordinate tokens from the memory;
* ``step``: the tracker's whole per-frame step on a frame already on the device (``Tracker.step`` for one
  target, ``BatchTracker.step`` for several; no host synchronisation inside, the boxes stay on the device).

Backends (:data:`BACKENDS`): ``reference-eager-fp32`` (the PyTorch reference, eager, float32),
``reference-bf16-graph`` (the reference in bfloat16 replayed as a CUDA graph), ``compile`` (as the previous, with
every encoder block through ``torch.compile``; the best PyTorch path) and ``fast`` (the backends ``auto`` picks:
CUDA crop, box and correlation ops, Triton decoder, Triton encoder blocks for large 16-bit batches; bfloat16,
CUDA graph). Models hold random weights from a fixed
seed (speed does not depend on the values) with nonzero injections, converted to the row's dtype with ``model.to``
(the trackers then run them without autocast).

Timing: ``warmup`` untimed calls (graph capture and compilation happen there), then ``runs`` timed calls. On CUDA
each call sits between two CUDA events and is synchronised (graph backends replay a graph captured by
:func:`~actrack_fast.cuda_graphs.capture_graph`; the ``step`` component replays the tracker's own graph); on CPU
``time.perf_counter``. A row reports the median and the 10th/90th percentiles, frames/s (calls per second) and
target-frames/s (``batch`` x frames/s).
"""
from __future__ import annotations

import copy
import datetime
import platform
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from . import backend
from .additive import target_kernel_size
from .batch_tracker import DTYPES, BatchTracker
from .config import CONFIGS, ModelConfig, get_config
from .correlation import xcorr_depthwise
from .cuda_graphs import capture_graph
from .model import ACTrack, build_model
from .preprocessing import ImageLayout, as_boxes, crop_normalized
from .tracker import Tracker

COMPONENTS = ("crop", "additive", "correlation", "encoder", "decoder", "step")
COMPONENT_TITLES = {"crop": "search crop + normalise", "additive": "additive net", "correlation": "correlation",
                    "encoder": "encoder", "decoder": "decoder", "step": "full step"}
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


@dataclass(frozen=True)
class Backend:
    """How one backend runs a component.

    ops: ``backend.use_backend`` choice for every op (``reference`` or ``auto``).
    dtype: the dtype it runs in (``None``: the caller's choice, default bfloat16 on CUDA and float32 on CPU).
    graph: replay a CUDA graph on CUDA devices.
    cuda_only: needs a CUDA device (a ``ValueError`` on CPU); otherwise it runs eagerly on CPU.
    compiled: the encoder blocks go through ``torch.compile``.
    """

    name: str
    ops: str
    dtype: Optional[torch.dtype]
    graph: bool
    cuda_only: bool
    compiled: bool
    description: str


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("reference-eager-fp32", "reference", torch.float32, graph=False, cuda_only=False, compiled=False,
            description="PyTorch reference, eager, float32"),
    Backend("reference-bf16-graph", "reference", torch.bfloat16, graph=True, cuda_only=True, compiled=False,
            description="PyTorch reference, bfloat16, one CUDA graph"),
    Backend("compile", "reference", None, graph=True, cuda_only=True, compiled=True,
            description="PyTorch reference with torch.compile'd encoder blocks, then one CUDA graph"),
    Backend("fast", "auto", None, graph=True, cuda_only=False, compiled=False,
            description="the backends `auto` picks (CUDA crop, box and correlation ops, cuDNN's fused "
                        "conv + ReLU, Triton decoder, Triton encoder path for 16-bit tokens), one CUDA graph; on CPU "
                        "eager, float32"),
)}
PYTORCH_BACKENDS = ("reference-eager-fp32", "reference-bf16-graph", "compile")
FAST_BACKEND = "fast"
REFERENCE_BACKEND = "reference-eager-fp32"
# The ops each component runs: a fast backend that speeds none of them up on a device is the reference there.
COMPONENT_OPS = {"crop": ("crop",), "additive": ("xcorr", "conv_relu"), "correlation": ("xcorr",),
                 "encoder": ("xcorr", "conv_relu", "encoder_block"), "decoder": ("decoder",), "step": backend.OPS}


class Unavailable(RuntimeError):
    """The backend cannot run this component on this device (the message says why); callers skip the case."""


# --- arguments --------------------------------------------------------------------------------------------
def resolve_device(device: Union[str, torch.device, None]) -> torch.device:
    """``None`` -> ``cuda`` when available, else ``cpu``; a CUDA device without CUDA is a ``ValueError``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {str(device)!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r}: CUDA is not available on this machine (use 'cpu')")
    return device


def default_config(device: torch.device) -> str:
    """B256 on a GPU; ``tiny`` on CPU, where B256 takes seconds a frame."""
    return "B256" if device.type == "cuda" else "tiny"


def default_backends(device: torch.device) -> tuple[str, ...]:
    """Every backend on CUDA; on CPU those that need no CUDA graph."""
    return tuple(name for name, b in BACKENDS.items() if device.type == "cuda" or not b.cuda_only)


def backend_dtype(name: str, dtype: Union[str, torch.dtype, None], device: torch.device) -> torch.dtype:
    """The dtype a backend runs in: its own where its name states one, else ``dtype`` (default bfloat16 on CUDA,
    float32 on CPU). A ``dtype`` contradicting a backend's own is a ``ValueError``."""
    own = BACKENDS[name].dtype
    if dtype is not None:
        if isinstance(dtype, str) and dtype in DTYPES:
            dtype = DTYPES[dtype]
        elif dtype not in DTYPES.values():
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if own is not None:
        if dtype is not None and dtype != own:
            raise ValueError(f"backend {name!r} runs {DTYPE_NAMES[own]}; dtype={DTYPE_NAMES[dtype]!r} "
                             "contradicts it (leave dtype unset or choose backend 'compile' or 'fast')")
        return own
    if dtype is not None:
        return dtype
    return torch.bfloat16 if device.type == "cuda" else torch.float32


@dataclass(frozen=True)
class CaseSpec:
    """One measurement's arguments, validated (see :func:`prepare`)."""

    component: str
    backend: str
    config: ModelConfig
    batch: int
    dtype: torch.dtype
    device: torch.device
    compile_mode: str

    @property
    def graph(self) -> bool:
        """Whether the timed call replays a CUDA graph (graph backends on CUDA; on CPU nothing is a graph)."""
        return BACKENDS[self.backend].graph and self.device.type == "cuda"


def case_spec(component: str, backend_name: str, config: Union[str, ModelConfig, None] = None, batch: int = 1,
              dtype: Union[str, torch.dtype, None] = None, device: Union[str, torch.device, None] = None,
              compile_mode: str = "default") -> CaseSpec:
    """Validate the arguments of :func:`prepare`; every problem is a ``ValueError`` naming the argument."""
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}; expected one of {list(COMPONENTS)}")
    if backend_name not in BACKENDS:
        raise ValueError(f"unknown backend {backend_name!r}; expected one of {list(BACKENDS)}")
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch (number of targets) must be an integer >= 1, got {batch!r}")
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"compile_mode must be one of {list(COMPILE_MODES)}, got {compile_mode!r}")
    device = resolve_device(device)
    if BACKENDS[backend_name].cuda_only and device.type != "cuda":
        raise ValueError(f"backend {backend_name!r} replays a CUDA graph and needs a CUDA device, got {str(device)!r}; "
                         f"on CPU use one of {list(default_backends(device))}")
    if config is None:
        config = default_config(device)
    if isinstance(config, str):
        config = get_config(config)
    elif not isinstance(config, ModelConfig):
        raise ValueError(f"config must be a config name ({sorted(CONFIGS)}) or a ModelConfig, got {config!r}")
    return CaseSpec(component, backend_name, config, int(batch), backend_dtype(backend_name, dtype, device), device,
                    compile_mode)


# --- models and inputs ------------------------------------------------------------------------------------
_MODELS: dict = {}
_VIDEOS: dict = {}


def benchmark_model(config: ModelConfig, device: torch.device, dtype: torch.dtype,
                    compile_mode: Optional[str] = None) -> ACTrack:
    """The model a case runs, built once per (config, device, dtype, compile mode) and kept: compiled blocks
    keep their compiled code across cases. Random weights from seed 0, nonzero injections."""
    key = (config, str(device), dtype, compile_mode)
    if key in _MODELS:
        return _MODELS[key]
    if compile_mode is not None:
        model = copy.deepcopy(benchmark_model(config, device, dtype))
        for block in model.encoder.body.blocks:  # one compiled block serves every block of the same shapes
            block.compile(mode=compile_mode, dynamic=False)
    elif dtype != torch.float32:
        model = copy.deepcopy(benchmark_model(config, device, torch.float32)).to(dtype)
    else:
        torch.manual_seed(0)
        model = build_model(config)
        for projection in model.additive.injections.values():
            torch.nn.init.normal_(projection.weight, std=0.02)
            torch.nn.init.normal_(projection.bias, std=0.02)
        model = model.eval().to(device)
    _MODELS[key] = model
    return model


def release() -> None:
    """Drop the kept models and videos (and the CUDA cache)."""
    _MODELS.clear()
    _VIDEOS.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def frame_size(config: ModelConfig) -> tuple[int, int]:
    """(width, height) of the frames: 640x480 around 256-pixel search crops, 320x240 for smaller ones."""
    return (640, 480) if config.search_size >= 256 else (320, 240)


def benchmark_video(config: ModelConfig, device: torch.device, num_frames: int = 16):
    """``(frames, first_box)``: a generated sequence (a textured target over a natural image) as uint8
    (H, W, 3) tensors on ``device``, cycled by the step and crop cases, and the target's first box."""
    from .data import render_sequence

    size = frame_size(config)
    key = (size, str(device), num_frames)
    if key not in _VIDEOS:
        sequence = render_sequence(num_frames, size, seed=0, clutter=False, target_size=min(size) // 5)
        _VIDEOS[key] = ([torch.from_numpy(frame).to(device) for frame in sequence.frames], sequence.boxes[0])
    return _VIDEOS[key]


def start_boxes(first: np.ndarray, count: int, size: tuple[int, int]) -> np.ndarray:
    """``count`` (x, y, w, h) boxes: the target's, then boxes of similar size spread over the frame."""
    rng = np.random.default_rng(0)
    width, height = size
    boxes = [np.asarray(first, np.float64)]
    while len(boxes) < count:
        w, h = first[2] * rng.uniform(0.5, 1.5), first[3] * rng.uniform(0.5, 1.5)
        boxes.append(np.array([rng.uniform(0, width - w), rng.uniform(0, height - h), w, h]))
    return np.stack(boxes)


def _randn(*shape: int, dtype: torch.dtype, device: torch.device, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)


def _crops(config: ModelConfig, batch: int, dtype: torch.dtype, device: torch.device):
    Ss, St, T = config.search_size, config.template_size, config.num_templates
    return (_randn(batch, 3, Ss, Ss, dtype=dtype, device=device, seed=1),
            _randn(batch, T, 3, St, St, dtype=dtype, device=device, seed=2))


# --- cases ------------------------------------------------------------------------------------------------
@dataclass
class _Prepared:
    call: Callable[[], object]  # one call of the component; it holds the inputs (and the tracker)
    inputs: str  # what the inputs are, for the report


def _component_call(spec: CaseSpec, model: ACTrack) -> _Prepared:
    cfg, batch, dtype, device = spec.config, spec.batch, spec.dtype, spec.device
    if spec.component == "crop":
        # The tracker's crop: geometry and gather on the device from boxes already there.
        frames, first = benchmark_video(cfg, device)
        frame = frames[1]
        pixels, layout = frame.reshape(-1, 3), ImageLayout.of([frame.shape], [0] * batch, device)
        boxes = as_boxes(start_boxes(first, batch, frame_size(cfg)), device)

        def crop():
            return crop_normalized(pixels, layout, boxes, cfg.search_factor, cfg.search_size, dtype)
        width, height = frame_size(cfg)
        return _Prepared(crop, f"{width}x{height} uint8 frame on {device.type}")
    if spec.component == "additive":
        search, templates = _crops(cfg, batch, dtype, device)
        return _Prepared(lambda: model.additive(search, templates), "random crops")
    if spec.component == "correlation":
        planes, n, k = batch * cfg.num_templates, cfg.search_size // cfg.patch_size, target_kernel_size(cfg)
        search_map = _randn(planes, cfg.additive_dim, n, n, dtype=dtype, device=device, seed=3)
        kernels = _randn(planes, cfg.additive_dim, k, k, dtype=dtype, device=device, seed=4)
        return _Prepared(lambda: xcorr_depthwise(search_map, kernels, "same"),
                         f"random maps ({planes}, {cfg.additive_dim}, {n}, {n}) * ({k}, {k})")
    if spec.component == "encoder":
        search, templates = _crops(cfg, batch, dtype, device)
        return _Prepared(lambda: model.encode(search, templates, check_finite=False), "random crops")
    if spec.component == "decoder":
        memory = _randn(batch, cfg.num_search_tokens, cfg.hidden_dim, dtype=dtype, device=device, seed=5)
        prompt = None
        if cfg.prompt_tokens:
            prompt = torch.rand(batch, 4, generator=torch.Generator().manual_seed(6)).to(device) * 0.5 + 0.25
        prefix = model.prefix(batch, device, prompt)
        return _Prepared(lambda: model.decode(memory, prefix), "random memory")
    raise AssertionError(spec.component)


def _tracker_step(spec: CaseSpec, model: ACTrack) -> _Prepared:
    cfg = spec.config
    frames, first = benchmark_video(cfg, spec.device)
    boxes = start_boxes(first, spec.batch, frame_size(cfg))
    # The model is already in the case's dtype: no autocast on top (its casts would be extra kernels).
    if spec.batch == 1:
        tracker = Tracker(model, cuda_graph=spec.graph)
        tracker.initialize(frames[0], boxes[0])
    else:
        tracker = BatchTracker(model, cuda_graph=spec.graph)
        for box in boxes:
            tracker.add(frames[0], box)
    position = iter(_cycle(len(frames)))
    width, height = frame_size(cfg)
    api = "Tracker.step" if spec.batch == 1 else f"BatchTracker.step, {spec.batch} targets in one video"
    return _Prepared(lambda: tracker.step(frames[next(position)]),
                     f"{api}; {len(frames)} {width}x{height} uint8 frames on {spec.device.type}, cycled")


def _cycle(n: int) -> Iterator[int]:
    while True:
        yield from range(1, n)  # frame 0 initialised the targets


def _in_context(call: Callable[[], object], ops: str) -> Callable[[], object]:
    def run():
        with torch.no_grad(), backend.use_backend(ops):
            return call()
    return run


def _check_available(spec: CaseSpec) -> dict[str, str]:
    """The backend chosen for each op; raises :class:`Unavailable` where the case cannot run as named."""
    b = BACKENDS[spec.backend]
    cfg = spec.config
    # The encoder blocks' choice depends on the token batch: a scalar expanded to the stream's shape and dtype
    # lets the rule see them without allocating the stream. Every case runs without gradients, as the rule asks.
    stream = torch.empty((), dtype=spec.dtype, device=spec.device).expand(spec.batch, cfg.num_tokens, cfg.embed_dim)
    with torch.no_grad(), backend.use_backend(b.ops):
        ops = {op: backend.select(op, stream if op in ("encoder_block", "conv_relu") else spec.device)
               for op in backend.OPS}
    if b.compiled:
        if spec.component not in ("encoder", "step"):
            raise Unavailable(f"backend 'compile' compiles only the encoder blocks: for the {spec.component} it is "
                              "'reference-bf16-graph'")
        if not backend.triton_installed():
            raise Unavailable("torch.compile on CUDA needs the triton package")
    used = COMPONENT_OPS[spec.component]
    if spec.backend == FAST_BACKEND and all(ops[op] == backend.REFERENCE for op in used):
        raise Unavailable(f"every op of the {spec.component} runs the reference on {spec.device} ("
                          + ", ".join(f"{op}={ops[op]}" for op in used) + "): xcorr=cuda needs the C++/CUDA "
                          "extension actrack_fast._C, decoder=triton needs triton and a CUDA GPU")
    return ops


class Case:
    """A prepared measurement: each call runs the component once and returns its time in ms.

    Build with :func:`prepare`. ``warm_up(n)`` runs untimed calls; ``row()`` summarises the timed calls so far.
    """

    def __init__(self, spec: CaseSpec) -> None:
        self.spec = spec
        self.ops = _check_available(spec)
        b = BACKENDS[spec.backend]
        self.model = benchmark_model(spec.config, spec.device, spec.dtype,
                                     spec.compile_mode if b.compiled else None)
        prepared = (_tracker_step if spec.component == "step" else _component_call)(spec, self.model)
        self.inputs = prepared.inputs
        # The eager call stays referenced: it holds the inputs whose memory a captured graph reads.
        self._eager = _in_context(prepared.call, b.ops)
        self._graph = None
        if spec.graph and spec.component != "step":  # the tracker captures its own graph
            self._graph = capture_graph(self._eager, warmup=3)
        self._call = self._eager if self._graph is None else self._graph.replay
        self.times: list[float] = []
        self._timer = _cuda_timer(spec.device) if spec.device.type == "cuda" else _cpu_timer

    def __call__(self) -> float:
        elapsed = self._timer(self._call)
        self.times.append(elapsed)
        return elapsed

    def warm_up(self, calls: int) -> None:
        """Untimed calls (the tracker captures its graph, compiled code compiles); clears the times."""
        for _ in range(calls):
            self._call()
        if self.spec.device.type == "cuda":
            torch.cuda.synchronize(self.spec.device)
        self.times.clear()

    def row(self) -> dict:
        """The timed calls so far as one result row (see :func:`markdown_table` for the fields shown)."""
        if not self.times:
            raise RuntimeError("no timed calls yet: call the case first")
        spec = self.spec
        times = np.asarray(self.times, np.float64)
        median = float(np.median(times))
        b = BACKENDS[spec.backend]
        if spec.graph:
            timing = "CUDA events, " + ("the tracker's CUDA graph" if spec.component == "step" else "CUDA-graph replay")
        else:
            timing = "CUDA events, eager" if spec.device.type == "cuda" else "perf_counter, eager"
        return {
            "component": spec.component, "backend": spec.backend, "config": spec.config.name, "batch": spec.batch,
            "dtype": DTYPE_NAMES[spec.dtype], "median_ms": median, "p10_ms": float(np.percentile(times, 10)),
            "p90_ms": float(np.percentile(times, 90)), "frames_per_s": 1e3 / median,
            "target_frames_per_s": spec.batch * 1e3 / median, "runs": len(self.times), "timing": timing,
            "graph": spec.graph, "ops": ", ".join(f"{op}={choice}" for op, choice in self.ops.items()),
            "compile_mode": spec.compile_mode if b.compiled else None, "inputs": self.inputs,
            **environment(spec.device),
        }

    def close(self) -> None:
        """Free the captured graph and the tracker (the models stay cached: :func:`release` drops them)."""
        self._graph = self._eager = self._call = None
        if self.spec.device.type == "cuda":
            torch.cuda.synchronize(self.spec.device)
            torch.cuda.empty_cache()


def _cuda_timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def timed(call: Callable[[], object]) -> float:
        with torch.cuda.device(device):
            start.record()
            call()
            end.record()
        end.synchronize()
        return start.elapsed_time(end)
    return timed


def _cpu_timer(call: Callable[[], object]) -> float:
    begin = time.perf_counter()
    call()
    return 1e3 * (time.perf_counter() - begin)


def environment(device: torch.device) -> dict:
    """Device name and software versions, as stored in every row."""
    triton_version = None
    if backend.triton_installed():
        import triton

        triton_version = triton.__version__
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda, "triton": triton_version,
            "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")}


def prepare(component: str, backend_name: str, config: Union[str, ModelConfig, None] = None, batch: int = 1,
            dtype: Union[str, torch.dtype, None] = None, device: Union[str, torch.device, None] = None,
            compile_mode: str = "default") -> Case:
    """A :class:`Case` ready to time.

    Args:
        component: one of :data:`COMPONENTS`.
        backend_name: one of :data:`BACKENDS`.
        config: model config name or object (default: B256 on CUDA, tiny on CPU).
        batch: number of targets (>= 1).
        dtype: for backends whose name states none (``compile``, ``fast``; default bfloat16 on CUDA).
        device: ``cpu``/``cuda``/``cuda:N`` (default: CUDA when available).
        compile_mode: ``torch.compile`` mode of backend ``compile``: ``default`` (compiles in seconds) or
            ``max-autotune-no-cudagraphs`` (minutes per batch size).
    Raises:
        ValueError: bad arguments (unknown component, backend or config, batch < 1, a graph backend on CPU).
        Unavailable: the backend cannot run this component on this device (the message says why).
    """
    return Case(case_spec(component, backend_name, config, batch, dtype, device, compile_mode))


def default_runs(component: str, device: torch.device) -> tuple[int, int]:
    """(warm-up calls, timed calls): on CUDA 20 and 500 frames for the step, 10 and 100 replays for a component;
    on CPU 2 and 10."""
    if device.type != "cuda":
        return 2, 10
    return (20, 500) if component == "step" else (10, 100)


def measure(component: str, backend_name: str, config: Union[str, ModelConfig, None] = None, batch: int = 1,
            dtype: Union[str, torch.dtype, None] = None, device: Union[str, torch.device, None] = None,
            compile_mode: str = "default", runs: Optional[int] = None, warmup: Optional[int] = None) -> dict:
    """Prepare a case (arguments as :func:`prepare`), warm it up, time ``runs`` calls and return its row.

    ``runs``/``warmup`` default to :func:`default_runs`."""
    for name, value, least in (("runs", runs, 1), ("warmup", warmup, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    case = prepare(component, backend_name, config, batch, dtype, device, compile_mode)
    default_warmup, default_timed = default_runs(component, case.spec.device)
    try:
        case.warm_up(default_warmup if warmup is None else warmup)
        for _ in range(default_timed if runs is None else runs):
            case()
        return case.row()
    finally:
        case.close()


# --- report -----------------------------------------------------------------------------------------------
def _key(row: Mapping) -> tuple:
    return (row["config"], row["component"], row["batch"])


def _sort_key(row: Mapping) -> tuple:
    return (row["config"], COMPONENTS.index(row["component"]), row["batch"], list(BACKENDS).index(row["backend"]))


def speedups(rows: Sequence[Mapping]) -> dict[tuple, dict]:
    """Per row (by (config, component, batch, backend)): ``vs_reference`` = reference-eager-fp32 median / this
    median, and for the fast path ``vs_best_pytorch`` = the fastest PyTorch backend's median / this median, with
    ``best_pytorch`` naming it; only where both rows were measured."""
    by_case: dict[tuple, dict] = {}
    for row in rows:
        by_case.setdefault(_key(row), {})[row["backend"]] = row
    out: dict[tuple, dict] = {}
    for key, backends in by_case.items():
        reference = backends.get(REFERENCE_BACKEND)
        pytorch = [backends[name] for name in PYTORCH_BACKENDS if name in backends]
        best = min(pytorch, key=lambda r: r["median_ms"]) if pytorch else None
        for name, row in backends.items():
            ratios = {}
            if reference is not None and name != REFERENCE_BACKEND:
                ratios["vs_reference"] = reference["median_ms"] / row["median_ms"]
            if best is not None and name == FAST_BACKEND:
                ratios["vs_best_pytorch"] = best["median_ms"] / row["median_ms"]
                ratios["best_pytorch"] = best["backend"]
            out[key + (name,)] = ratios
    return out


def _one(rows: Sequence[Mapping], field: str) -> str:
    values = sorted({str(row.get(field)) for row in rows})
    return values[0] if len(values) == 1 else " / ".join(values)


def markdown_table(rows: Sequence[Mapping], skipped: Sequence[str] = ()) -> str:
    """One markdown table of measured rows (from :func:`measure` or ``extra_info`` of the pytest suite), with
    a header naming the device, versions and timing, and a legend of the backends that appear.

    ``skipped`` lines (cases that did not run, with the reason) are listed after the legend.
    """
    if not rows:
        raise ValueError("no measured rows to tabulate")
    devices = {row["device"] for row in rows}
    if len(devices) > 1:
        raise ValueError(f"rows from several devices {sorted(devices)}: make one table per device")
    latest = {(*_key(row), row["backend"]): row for row in rows}  # a case measured twice: the later row
    rows = sorted(latest.values(), key=_sort_key)
    ratios = speedups(rows)
    header = (f"**{_one(rows, 'device')}**, torch {_one(rows, 'torch')} (CUDA {_one(rows, 'cuda')}), "
              f"triton {_one(rows, 'triton')}, config {_one(rows, 'config')}, {_one(rows, 'date')}. "
              "Median of the timed calls (p10-p90) after warm-up; "
              + ("CUDA events around each call, CUDA-graph replay for graph backends; frames already on the GPU."
                 if rows[0]["timing"].startswith("CUDA") else "perf_counter around each call; frames in CPU memory."))
    lines = [header, "",
             "| component | backend | targets | dtype | median ms (p10-p90) | frames/s | target-frames/s "
             "| vs reference fp32 | vs best PyTorch | calls |",
             "|---|---|--:|---|--:|--:|--:|--:|--:|--:|"]
    for row in rows:
        ratio = ratios[(*_key(row), row["backend"])]
        vs_reference = f"{ratio['vs_reference']:.2f}x" if "vs_reference" in ratio else "-"
        vs_best = (f"{ratio['vs_best_pytorch']:.2f}x ({ratio['best_pytorch']})" if "vs_best_pytorch" in ratio
                   else "-")
        lines.append(f"| {COMPONENT_TITLES[row['component']]} | {row['backend']} | {row['batch']} | {row['dtype']} | "
                     f"{row['median_ms']:.4g} ({row['p10_ms']:.4g}-{row['p90_ms']:.4g}) | {row['frames_per_s']:,.1f} | "
                     f"{row['target_frames_per_s']:,.1f} | {vs_reference} | {vs_best} | {row['runs']} |")
    lines += ["", "Backends: " + "; ".join(f"`{name}`: {BACKENDS[name].description}" for name in BACKENDS
                                           if any(row["backend"] == name for row in rows)) + "."]
    fast_ops = sorted({row["ops"] for row in rows if row["backend"] == FAST_BACKEND})
    if fast_ops:
        lines.append(f"Ops chosen by `fast`: {' / '.join(fast_ops)}.")
    modes = sorted({row["compile_mode"] for row in rows if row.get("compile_mode")})
    if modes:
        lines.append(f"torch.compile mode: {', '.join(modes)}.")
    steps = sorted({row["inputs"] for row in rows if row["component"] == "step"})
    if steps:
        lines.append("Full step: " + " / ".join(steps) + "; random weights; step() only (no device-to-host copy).")
    lines.append("frames/s = calls per second; target-frames/s = targets x frames/s; vs = speed-up (time ratio) "
                 "against the named backend in the same run.")
    lines += [f"Skipped: {line}" for line in skipped]
    return "\n".join(lines) + "\n"
