"""Tracker against the spec's procedure written plainly with OpenCV; presets; bad input; memory."""
import gc
import sys

import numpy as np
import pytest
import torch
from test_preprocessing import opencv_crop

from actrack_fast import BatchTracker, Tracker, TrackerSettings, build_model, get_config
from actrack_fast.decoding import DecodeResult
from actrack_fast.presets import DATASETS, update_preset
from actrack_fast.data import render_sequence

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
# Small enough that a CPU frame takes milliseconds: 4x4 search tokens, 2x2 template tokens.
SMALL = dict(search_size=64, template_size=32)
# A thousand frames a second or so: for the 10,000-frame memory test.
MICRO = dict(embed_dim=32, depth=1, num_heads=2, search_size=32, template_size=16, hidden_dim=32, dec_heads=2,
             dec_ffn_dim=64, dec_layers=1, additive_dim=8, bins=100)



def clean_sequence(num_frames, height, width, target_size, seed=0):
    """Frames and ground-truth boxes of a synthetic sequence without clutter: the target is always in view."""
    sequence = render_sequence(num_frames, (width, height), seed, clutter=False, target_size=target_size)
    return sequence.frames, sequence.boxes


def small_model(**overrides):
    return build_model(get_config("tiny", **{**SMALL, **overrides})).eval()


class SpecTracker:
    """Spec section 6 written plainly: OpenCV crops on the host, Python floats, a list of templates."""

    def __init__(self, model, interval, threshold, window=None):
        self.model, self.cfg = model, model.config
        self.interval, self.threshold, self.window = interval, threshold, window

    def crop(self, image, box, factor, size):
        crop, resize_factor = opencv_crop(image, box, factor, size)
        return (torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255.0 - MEAN) / STD, resize_factor

    def initialize(self, image, box):
        template, _ = self.crop(image, box, self.cfg.template_factor, self.cfg.template_size)
        self.templates = [template] * self.cfg.num_templates
        self.state, self.frame = list(box), 0

    def track(self, image):
        H, W = image.shape[:2]
        S = self.cfg.search_size
        self.frame += 1
        search, resize_factor = self.crop(image, self.state, self.cfg.search_factor, S)
        x, y, w, h = self.state
        half = 0.5 * S / resize_factor
        prompt = torch.tensor([[0.5, 0.5, w / (2 * half), h / (2 * half)]]) if self.cfg.prompt_tokens else None
        result = self.model.generate(search, torch.stack(self.templates, dim=1), prompt, window=self.window)
        cx, cy, pw, ph = (result.boxes[0] * S / resize_factor).tolist()
        cx, cy = cx + (x + 0.5 * w - half), cy + (y + 0.5 * h - half)
        x1, y1 = cx - 0.5 * pw, cy - 0.5 * ph
        x2, y2 = x1 + pw, y1 + ph
        x1, x2 = min(max(0, x1), W - 10), min(max(10, x2), W)
        y1, y2 = min(max(0, y1), H - 10), min(max(10, y2), H)
        self.state = [x1, y1, max(10, x2 - x1), max(10, y2 - y1)]
        confidence = result.probs.sum().item() * 10
        if self.cfg.num_templates > 1 and self.frame % self.interval == 0 and confidence > self.threshold:
            template, _ = self.crop(image, self.state, self.cfg.template_factor, self.cfg.template_size)
            self.templates.append(template)
            if len(self.templates) > self.cfg.num_templates:
                self.templates.pop(1)
        return self.state, confidence


@pytest.mark.parametrize("overrides,window", [
    (dict(num_templates=3), None),      # three templates: the oldest non-initial one is dropped
    (dict(num_templates=2), False),
    (dict(num_templates=2, prompt_tokens=4), True),
])
def test_tracker_follows_the_spec_procedure(overrides, window):
    torch.manual_seed(0)
    model = small_model(**overrides)
    frames, truth = clean_sequence(num_frames=10, height=96, width=128, target_size=24, seed=1)
    tracker = Tracker(model, update_interval=2, update_threshold=0.0, window=window)
    spec = SpecTracker(model, interval=2, threshold=0.0, window=window)
    tracker.initialize(frames[0], truth[0])
    spec.initialize(frames[0], truth[0].tolist())
    for frame in frames[1:]:
        box, confidence = tracker.track(frame)
        expected_box, expected_confidence = spec.track(frame)
        assert list(box) == expected_box
        assert confidence == pytest.approx(expected_confidence, rel=1e-6)
    assert len(spec.templates) == model.config.num_templates


def test_template_update_keeps_the_first_and_drops_the_oldest_other():
    torch.manual_seed(0)
    model = small_model(num_templates=3)
    frames, truth = clean_sequence(num_frames=5, height=96, width=128, target_size=24)
    tracker = Tracker(model, update_interval=1, update_threshold=-1.0)
    tracker.initialize(frames[0], truth[0])
    templates = lambda: tracker._batch._state.templates[0].clone()  # noqa: E731 - (T, 3, St, St) of the one target
    initial = templates()
    seen = []
    for frame in frames[1:4]:
        tracker.track(frame)
        seen.append(templates()[-1])
    final = templates()
    torch.testing.assert_close(final[0], initial[0], rtol=0, atol=0)
    torch.testing.assert_close(final[1], seen[-2], rtol=0, atol=0)
    torch.testing.assert_close(final[2], seen[-1], rtol=0, atol=0)
    assert not torch.equal(seen[-1], seen[-2])


def test_presets_match_seqtrack_yaml_values():
    assert update_preset("B256", "vot20") == (1, 0.55)
    assert update_preset("B384", "VOT22") == (20, 0.45)
    assert update_preset("L256", "vot21") == (10, 0.475)
    assert update_preset("L384", "vot20") == (10, 0.475)
    for config in ("B256", "B384", "L256", "L384", "tiny"):
        assert update_preset(config, "lasot") == (450, 0.6)
        assert update_preset(config, "got10k_test") == (1, 0.6)
        assert update_preset(config, "trackingnet") == (25, 0.6)
        assert update_preset(config, "default") == (9999, 0.6)
    assert "LASOT" in DATASETS and "DEFAULT" in DATASETS
    settings = TrackerSettings.from_preset("B256", "vot20", update_threshold=0.7, window=False)
    assert (settings.update_interval, settings.update_threshold, settings.window) == (1, 0.7, False)
    model = small_model()
    assert Tracker(model, "got10k_test").settings.update_interval == 1


def test_window_option_reaches_the_decoder():
    torch.manual_seed(0)
    model = small_model()
    frames, truth = clean_sequence(num_frames=2, height=96, width=128, target_size=24)
    seen = []
    generate = model.generate
    model.generate = lambda *args, **kwargs: seen.append(kwargs["window"]) or generate(*args, **kwargs)
    for window in (None, False, True):
        tracker = Tracker(model, window=window)
        tracker.initialize(frames[0], truth[0])
        tracker.track(frames[1])
    assert seen == [None, False, True]


def test_bad_input_raises_clear_errors():
    model = small_model()
    frame = np.zeros((48, 64, 3), np.uint8)
    tracker = Tracker(model)
    with pytest.raises(RuntimeError, match="initialize"):
        tracker.track(frame)
    with pytest.raises(ValueError, match="positive width"):
        tracker.initialize(frame, (10, 10, 0, 5))
    with pytest.raises(ValueError, match="outside"):
        tracker.initialize(frame, (100, 10, 5, 5))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        tracker.initialize(np.zeros((48, 64), np.uint8), (10, 10, 5, 5))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        tracker.initialize(np.zeros((48, 64, 4), np.uint8), (10, 10, 5, 5))
    tracker.initialize(frame, (10, 10, 5, 5))
    with pytest.raises(TypeError, match="uint8"):
        tracker.track(frame.astype(np.float32))
    with pytest.raises(ValueError, match="unknown dataset preset"):
        Tracker(model, "lasott")
    with pytest.raises(TypeError, match="unknown tracker setting"):
        Tracker(model, update_intervall=3)
    with pytest.raises(ValueError, match="update_interval"):
        Tracker(model, update_interval=0)
    with pytest.raises(ValueError, match="dtype"):
        Tracker(model, dtype="int8")
    with pytest.raises(TypeError, match="ACTrack"):
        Tracker("B256")


def test_target_leaving_the_frame_keeps_a_valid_clipped_box():
    model = small_model()
    bins = model.config.bins

    def towards_bottom_right(search, templates, prompt_boxes=None, window=None, check_finite=True):
        tokens = torch.tensor([[bins - 1, bins - 1, bins // 8, bins // 8]] * search.shape[0])
        return DecodeResult(tokens, torch.full((search.shape[0], 4), 0.25), tokens.float() / (bins - 1))

    model.generate = towards_bottom_right
    frame = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    tracker = Tracker(model)
    tracker.initialize(frame, (20, 20, 12, 10))
    for _ in range(5):
        (x, y, w, h), confidence = tracker.track(frame)
        assert w >= 10 and h >= 10 and 0 <= x <= 80 - 10 and 0 <= y <= 60 - 10
        assert x + w <= 80 and y + h <= 60
        assert confidence == pytest.approx(10.0)
    assert x == 70 and y == 50


@pytest.mark.parametrize("how", ["autocast", "converted model"])
def test_bfloat16_tracks(how):
    torch.manual_seed(0)
    model = small_model()
    frames, truth = clean_sequence(num_frames=4, height=96, width=128, target_size=24)
    tracker = Tracker(model, dtype="bfloat16") if how == "autocast" else Tracker(model.to(torch.bfloat16))
    tracker.initialize(frames[0], truth[0])
    for frame in frames[1:]:
        (x, y, w, h), confidence = tracker.track(frame)
        assert np.isfinite([x, y, w, h, confidence]).all() and w >= 10 and h >= 10 and 0 < confidence <= 40


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def track_many(tracker, frames, count):
    for index in range(count):
        tracker.track(frames[index % len(frames)])


def test_ten_thousand_frames_do_not_grow_host_memory():
    torch.manual_seed(0)
    model = build_model(get_config("tiny", **MICRO)).eval()
    frames, truth = clean_sequence(num_frames=16, height=48, width=64, target_size=12)
    tracker = Tracker(model, update_interval=3, update_threshold=-1.0)  # template updates too
    tracker.initialize(frames[0], truth[0])
    track_many(tracker, frames, 1000)  # warm-up: allocator pools and torch's caches fill up
    gc.collect()
    blocks, rss = sys.getallocatedblocks(), _rss_bytes()
    track_many(tracker, frames, 9000)
    gc.collect()
    # Keeping one object per frame would add >= 9000 Python blocks; one small tensor per frame, ~2 MiB.
    assert sys.getallocatedblocks() - blocks < 2000
    assert _rss_bytes() - rss < 2 * 2**20, f"resident memory grew {(_rss_bytes() - rss) / 2**20:.2f} MiB"


@pytest.mark.cuda
def test_frames_do_not_grow_device_memory():
    # The allocated bytes must come back exactly to their level after warm-up, so a per-frame leak shows
    # at once: 2,000 frames (the host test above runs the 10,000) keep the GPU suite short.
    torch.manual_seed(0)
    model = build_model(get_config("tiny", **MICRO)).eval().cuda()
    frames, truth = clean_sequence(num_frames=16, height=48, width=64, target_size=12)
    frames = [torch.from_numpy(f).cuda() for f in frames]
    tracker = Tracker(model, update_interval=3, update_threshold=-1.0)
    tracker.initialize(frames[0], truth[0])
    track_many(tracker, frames, 200)
    torch.cuda.synchronize()
    allocated = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    track_many(tracker, frames, 1800)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == allocated
    assert torch.cuda.max_memory_allocated() - allocated < 8 * 2**20


@pytest.mark.cuda
def test_gpu_tracker_takes_numpy_or_device_frames_alike():
    torch.manual_seed(0)
    model = small_model(num_templates=3).cuda()
    frames, truth = clean_sequence(num_frames=6, height=96, width=128, target_size=24)
    results = []
    for inputs in (frames, [torch.from_numpy(f).cuda() for f in frames]):
        tracker = Tracker(model, update_interval=2, update_threshold=0.0)
        tracker.initialize(inputs[0], truth[0])
        results.append([tracker.track(frame) for frame in inputs[1:]])
    assert results[0] == results[1]


def test_step_then_results_equals_track_and_graphs_need_cuda():
    torch.manual_seed(0)
    model = small_model(num_templates=3)
    frames, truth = clean_sequence(num_frames=5, height=96, width=128, target_size=24)
    tracked, stepped = Tracker(model, update_interval=2), BatchTracker(model, update_interval=2)
    tracked.initialize(frames[0], truth[0])
    target = stepped.add(frames[0], truth[0])
    assert np.isnan(stepped.results()[target].confidence)  # not tracked yet
    for frame in frames[1:]:
        expected = tracked.track(frame)
        stepped.step(frame)
        assert stepped.results()[target] == expected and tracked.box == expected.box
    with pytest.raises(ValueError, match="cuda_graph=True needs the model on a CUDA device"):
        Tracker(model, cuda_graph=True)


def test_autocast_tracking_runs_a_precast_copy_with_the_same_results():
    torch.manual_seed(0)
    model = small_model(num_templates=3)
    with torch.no_grad():
        for injection in model.additive.injections.values():
            injection.weight.normal_(0, 0.05)  # the additive net takes part
    frames, truth = clean_sequence(num_frames=6, height=96, width=128, target_size=24)
    precast, plain = (Tracker(model, dtype="bfloat16", update_interval=2, update_threshold=-1.0) for _ in range(2))
    copy = precast._batch._step.model
    assert copy is not model and copy.encoder.body.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert copy.encoder.body.blocks[0].norm1.weight.dtype == torch.float32
    assert copy.vocab_embed.layers[0].weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the caller's model is untouched
    plain._batch._step.model = model  # autocast recasting the fp32 weights itself
    for tracker in (precast, plain):
        tracker.initialize(frames[0], truth[0])
    for frame in frames[1:]:
        assert precast.track(frame) == plain.track(frame)
