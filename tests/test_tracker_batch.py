"""BatchTracker: N targets per call equal N independent Trackers; one encoder and one decoder call per frame."""
import copy

import numpy as np
import pytest
import torch
from test_tracker import clean_sequence

from actrack_fast import BatchTracker, Tracker, build_model, get_config

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(search_size=64, template_size=32, num_templates=3)



@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(get_config("tiny", **SMALL)).eval()


def assert_same(batch_result, single_result):
    # Same tokens, hence the same boxes to the bit; the token probabilities (so the confidence) may differ
    # in the last bits because batched matmuls round differently from single-sample ones.
    assert batch_result.box == single_result.box
    assert batch_result.confidence == pytest.approx(single_result.confidence, rel=1e-5)


def test_targets_in_one_video_equal_independent_trackers(model):
    frames, truth = clean_sequence(num_frames=8, height=96, width=128, target_size=24, seed=3)
    starts = [truth[0], truth[0] + [20, -10, 6, 4], [5.0, 60.0, 30.0, 20.0], [100.0, 5.0, 12.0, 30.0]]
    options = dict(update_interval=2, update_threshold=0.0)
    batch = BatchTracker(model, **options)
    ids = [batch.add(frames[0], box) for box in starts]
    singles = [Tracker(model, **options) for _ in starts]
    for tracker, box in zip(singles, starts):
        tracker.initialize(frames[0], box)
    for frame in frames[1:]:
        results = batch.track(frame)
        assert list(results) == ids
        for target, tracker in zip(ids, singles):
            assert_same(results[target], tracker.track(frame))


def test_targets_in_different_videos_added_and_removed_between_frames(model):
    videos = [clean_sequence(num_frames=9, height=h, width=w, target_size=20, seed=s)
              for s, (h, w) in enumerate([(80, 100), (96, 128), (64, 144)])]
    options = dict(update_interval=3, update_threshold=0.0)
    batch = BatchTracker(model, **options)
    singles = {}

    def start(name, video, frame_index):
        frames, truth = videos[video]
        batch.add(frames[frame_index], truth[frame_index], target_id=name)
        singles[name] = (video, Tracker(model, **options))
        singles[name][1].initialize(frames[frame_index], truth[frame_index])

    start("a", 0, 0)
    start("b", 1, 0)
    for index in range(1, 9):
        if index == 3:
            start("c", 2, 2)
        if index == 5:
            batch.remove("a")
            del singles["a"]
        frames = {name: videos[video][0][index] for name, (video, _) in singles.items()}
        results = batch.track(frames)
        assert set(results) == set(singles) == set(batch.target_ids)
        for name, (_, tracker) in singles.items():
            assert_same(results[name], tracker.track(frames[name]))


def test_one_encoder_and_one_decoder_call_per_frame(model):
    calls = {"encode": 0, "decode": 0}
    for name in calls:
        original = getattr(model, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        setattr(model, name, counted)
    try:
        frames, truth = clean_sequence(num_frames=4, height=96, width=128, target_size=24)
        batch = BatchTracker(model, update_interval=1, update_threshold=-1.0)
        for k in range(6):
            batch.add(frames[0], truth[0] + [k, k, 0, 0])
        for frame in frames[1:]:
            batch.track(frame)
        assert calls == {"encode": 3, "decode": 3}
    finally:
        del model.encode, model.decode


def test_batch_tracker_bad_use_raises_clear_errors(model):
    frame = np.zeros((48, 64, 3), np.uint8)
    batch = BatchTracker(model)
    with pytest.raises(RuntimeError, match="add"):
        batch.track(frame)
    first = batch.add(frame, (10, 10, 8, 8))
    second = batch.add(frame, (30, 20, 8, 8))
    assert first != second
    with pytest.raises(ValueError, match="already"):
        batch.add(frame, (10, 10, 8, 8), target_id=first)
    with pytest.raises(ValueError, match=r"missing \[1\]"):
        batch.track({first: frame})
    with pytest.raises(ValueError, match=r"unknown \['x'\]"):
        batch.track({first: frame, second: frame, "x": frame})
    with pytest.raises(ValueError, match=r"frames\[1\] must have shape"):
        batch.track({first: frame, second: frame[..., 0]})
    with pytest.raises(KeyError, match="unknown target_id"):
        batch.remove("nope")
    batch.remove(first)
    assert batch.target_ids == (second,) and len(batch) == 1
    assert batch.add(frame, (5, 5, 8, 8)) not in (first, second)  # ids are not reused


def test_non_finite_results_of_a_tracked_frame_raise(model):
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.vocab_embed.layers[-1].bias.fill_(float("nan"))
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    batch = BatchTracker(broken, cuda_graph=False)
    target = batch.add(frame, (10, 10, 12, 12))
    assert np.isnan(batch.results()[target].confidence)  # NaN before the first tracked frame is no error
    with pytest.raises(RuntimeError, match=r"targets \[0\] got a non-finite confidence"):
        batch.track(frame)


@pytest.mark.cuda
def test_batch_on_gpu_equals_single_trackers_on_gpu(monkeypatch):
    # TF32 convolutions round by algorithm, and cuDNN picks algorithms by batch size.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    model = build_model(get_config("tiny", **SMALL)).eval().cuda()
    frames, truth = clean_sequence(num_frames=6, height=96, width=128, target_size=24)
    frames = [torch.from_numpy(f).cuda() for f in frames]
    starts = [truth[0] + [k, -k, k, 0] for k in range(8)]
    batch = BatchTracker(model, update_interval=2, update_threshold=0.0)
    ids = [batch.add(frames[0], box) for box in starts]
    singles = [Tracker(model, update_interval=2, update_threshold=0.0) for _ in starts]
    for tracker, box in zip(singles, starts):
        tracker.initialize(frames[0], box)
    for frame in frames[1:]:
        results = batch.track(frame)
        for target, tracker in zip(ids, singles):
            single = tracker.track(frame)
            assert_same(results[target], single)
