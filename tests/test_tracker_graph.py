"""The CUDA-graph tracking step against the eager step of the same backend and dtype: replaying must not
change a single box, confidence or template, including across template updates, several videos of different
sizes, and re-captures after targets come and go; a replayed frame never waits for the host."""
import numpy as np
import pytest
import torch
from test_tracker import clean_sequence

from actrack_fast import BatchTracker, Tracker, build_model, get_config

pytestmark = pytest.mark.cuda

FRAMES = 200


def device_frames(num_frames, height, width, target_size, seed=0):
    frames, truth = clean_sequence(num_frames, height, width, target_size, seed)
    return [torch.from_numpy(f).cuda() for f in frames], truth


def median_confidence(model, frames, box, dtype, probe_frames=20):
    """A threshold that the confidences cross both ways, so the run mixes updates and skipped updates."""
    probe = Tracker(model, dtype=dtype, cuda_graph=False, update_interval=1, update_threshold=-1.0)
    probe.initialize(frames[0], box)
    return float(np.median([probe.track(frame).confidence for frame in frames[1:probe_frames]]))


def run(model, frames, box, dtype, cuda_graph, threshold):
    tracker = Tracker(model, dtype=dtype, cuda_graph=cuda_graph, update_interval=2, update_threshold=threshold)
    tracker.initialize(frames[0], box)
    results = [tracker.track(frame) for frame in frames[1:]]
    return results, tracker._batch._state.templates.clone()


@pytest.mark.parametrize("config,overrides,dtype", [
    ("B256", {}, "bfloat16"),
    ("B256", {}, "float32"),
    ("tiny", dict(search_size=64, template_size=32, num_templates=3, prompt_tokens=4), "float32"),
])
def test_graph_replay_gives_the_eager_results(config, overrides, dtype):
    torch.manual_seed(0)
    model = build_model(get_config(config, **overrides)).eval().cuda()
    frames, truth = device_frames(FRAMES + 1, 240, 320, target_size=40)
    threshold = median_confidence(model, frames, truth[0], dtype)
    eager, eager_templates = run(model, frames, truth[0], dtype, cuda_graph=False, threshold=threshold)
    graphed, graphed_templates = run(model, frames, truth[0], dtype, cuda_graph=True, threshold=threshold)
    assert len(graphed) == FRAMES
    assert all(np.isfinite(r.box).all() and np.isfinite(r.confidence) for r in graphed)
    assert graphed == eager  # boxes and confidences, to the bit
    torch.testing.assert_close(graphed_templates, eager_templates, rtol=0, atol=0)
    # The run crossed the threshold both ways: some templates were replaced, so the updates were exercised.
    confidences = [r.confidence for r in eager[1::2]]
    assert min(confidences) <= threshold < max(confidences)


def test_graph_replay_follows_targets_that_come_and_go():
    torch.manual_seed(1)
    model = build_model(get_config("tiny", search_size=64, template_size=32, num_templates=3)).eval().cuda()
    video_a, truth_a = device_frames(13, 96, 128, target_size=24, seed=3)
    video_b, truth_b = device_frames(13, 80, 100, target_size=20, seed=4)
    outputs = []
    for cuda_graph in (False, True):
        tracker = BatchTracker(model, cuda_graph=cuda_graph, update_interval=2, update_threshold=-1.0)
        a = tracker.add(video_a[0], truth_a[0])
        b = tracker.add(video_b[0], truth_b[0])
        c = tracker.add(video_a[0], truth_a[0] + [10, 5, 4, -2])
        results = [tracker.track({a: video_a[i], b: video_b[i], c: video_a[i]}) for i in range(1, 5)]
        tracker.remove(b)  # the captured graph no longer fits: the next frame captures again
        results += [tracker.track({a: video_a[i], c: video_a[i]}) for i in range(5, 9)]
        d = tracker.add(video_b[8], truth_b[8])
        results += [tracker.track({a: video_a[i], c: video_a[i], d: video_b[i]}) for i in range(9, 13)]
        outputs.append(results)
    assert outputs[1] == outputs[0]
    assert [list(r) for r in outputs[1][-1:]] == [[0, 2, 3]]


def test_replayed_frames_never_wait_for_the_host():
    torch.manual_seed(0)
    model = build_model(get_config("tiny", search_size=64, template_size=32)).eval().cuda()
    frames, truth = device_frames(8, 96, 128, target_size=24)
    tracker = Tracker(model, update_interval=2, update_threshold=-1.0)
    tracker.initialize(frames[0], truth[0])
    tracker.step(frames[1])  # captures the graph (capturing synchronises)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for frame in frames[2:]:
            tracker.step(frame)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    box = tracker.box
    assert np.isfinite(box).all() and box[2] > 0 and box[3] > 0

