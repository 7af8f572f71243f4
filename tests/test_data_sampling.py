"""SeqTrack sampling and processing: jitter statistics, frame sampling, quantisation, teacher forcing."""
import numpy as np
import pytest
import torch

from actrack_fast.config import get_config
from actrack_fast.data import write_synthetic_coco, write_synthetic_got10k
from actrack_fast.data.datasets import CocoSequences, Got10k
from actrack_fast.data.processing import JitterSettings, SeqTrackProcessing, clip_to_crop, jitter_boxes, teacher_forcing
from actrack_fast.data.sampler import TrackingSampler, sample_frame_ids
from actrack_fast.decoding import boxes_to_tokens, tokens_to_boxes
from actrack_fast.model import build_model
from actrack_fast.preprocessing import crop_and_resize, normalize_crops

CONFIG = get_config("tiny", search_size=64, template_size=64)
NO_AUGMENT = JitterSettings(search_center=0, search_scale=0, brightness=0, flip_prob=0, gray_prob=0)


@pytest.fixture(scope="module")
def got10k(tmp_path_factory):
    root = tmp_path_factory.mktemp("got10k")
    write_synthetic_got10k(root, num_sequences=3, num_frames=12, size=(96, 72), seed=0, natural=False)
    return Got10k(root)


def test_search_jitter_statistics_match_seqtrack():
    rng = np.random.default_rng(0)
    box = np.array([[100.0, 50.0, 40.0, 10.0]])
    jittered = jitter_boxes(rng, np.repeat(box, 20000, 0), center=3.5, scale=0.5)
    log_scale = np.log(jittered[:, 2:] / box[:, 2:])
    assert abs(log_scale.mean()) < 0.02 and abs(log_scale.std() - 0.5) < 0.02
    # Centre offset in units of the jittered box's sqrt(area): uniform on [-1.75, 1.75] per axis.
    side = np.sqrt(jittered[:, 2] * jittered[:, 3])[:, None]
    offset = (jittered[:, :2] + jittered[:, 2:] / 2 - (box[:, :2] + box[:, 2:] / 2)) / side
    assert np.abs(offset).max() <= 1.75 + 1e-9 and np.abs(offset).max() > 1.7
    assert abs(offset.mean()) < 0.03 and abs(offset.std() - 3.5 / np.sqrt(12)) < 0.02


def test_zero_jitter_keeps_the_box():
    box = np.array([[10.0, 20.0, 30.0, 40.0]])
    np.testing.assert_allclose(jitter_boxes(np.random.default_rng(1), box, 0.0, 0.0), box)


def test_frame_sampling_respects_visibility_order_and_interval():
    rng = np.random.default_rng(0)
    visible = rng.random(300) > 0.3
    for _ in range(200):
        templates, search = sample_frame_ids(rng, visible, num_templates=3, max_interval=20)
        base = templates[0]
        assert visible[templates].all() and visible[search]
        assert all(base - 20 <= t < base for t in templates[1:])
        assert base < search < base + 20
    assert sample_frame_ids(rng, np.zeros(50, bool), 2, 10) is None


def test_frame_sampling_widens_the_window_when_it_is_empty():
    visible = np.zeros(100, bool)
    visible[[10, 60]] = True
    templates, search = sample_frame_ids(np.random.default_rng(0), visible, num_templates=1, max_interval=5)
    assert templates == [10] and search == 60


def test_token_quantisation_round_trip():
    bins = CONFIG.bins
    tokens = torch.arange(bins)
    assert torch.equal(boxes_to_tokens(tokens_to_boxes(tokens, bins), bins), tokens)
    boxes = torch.rand(1000, 4, dtype=torch.float64)
    error = (tokens_to_boxes(boxes_to_tokens(boxes, bins), bins).double() - boxes).abs()
    assert error.max() <= 0.5 / (bins - 1) + 1e-7


def test_clip_to_crop_clips_corners():
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.95, 0.1, 0.2, 0.4]], dtype=torch.float64)
    clipped = clip_to_crop(boxes)
    torch.testing.assert_close(clipped[0], boxes[0])
    torch.testing.assert_close(clipped[1], torch.tensor([0.925, 0.15, 0.15, 0.3], dtype=torch.float64))


@pytest.mark.parametrize("prompt_tokens", [0, 4])
def test_teacher_forcing_layout_matches_the_model_prefix(prompt_tokens):
    config = CONFIG.replace(prompt_tokens=prompt_tokens)
    boxes = torch.rand(3, 4)
    prompt = torch.rand(3, 4) if prompt_tokens else None
    inputs, targets = teacher_forcing(boxes, config, prompt)
    tokens = boxes_to_tokens(boxes, config.bins)
    K = prompt_tokens
    assert inputs.shape == (3, K + 5) and targets.shape == (3, 5)
    prefix = build_model(config).prefix(3, torch.device("cpu"), prompt)
    assert torch.equal(inputs[:, : K + 1], prefix)
    assert torch.equal(inputs[:, K + 1 :], tokens) and torch.equal(targets[:, :4], tokens)
    assert (targets[:, 4] == config.end_token).all()
    with pytest.raises(ValueError, match="prompt_boxes"):
        teacher_forcing(boxes, config, None if prompt_tokens else torch.rand(3, 4))


def test_processing_uses_the_tracker_crop_and_centres_an_unjittered_target(got10k):
    info = got10k.sequence_info(0)
    frames = [got10k.load_frame(0, i) for i in range(3)]
    sample = SeqTrackProcessing(CONFIG, NO_AUGMENT)(np.random.default_rng(0), frames[:2], info.boxes[:2],
                                                    frames[2], info.boxes[2])
    crop, geometry = crop_and_resize(torch.from_numpy(frames[2]), info.boxes[2:3].astype(np.float64),
                                     CONFIG.search_factor, CONFIG.search_size)
    torch.testing.assert_close(sample["search"], normalize_crops(crop)[0])
    w, h = info.boxes[2, 2:]
    side = geometry.side[0].item()
    torch.testing.assert_close(sample["search_box"], torch.tensor([0.5, 0.5, w / side, h / side]), atol=1e-6, rtol=0)
    assert sample["templates"].shape == (2, 3, 64, 64) and sample["sequence"][0] == CONFIG.start_token


def test_processing_flip_mirrors_crops_and_box(got10k):
    info = got10k.sequence_info(1)
    frames = [got10k.load_frame(1, i) for i in range(3)]
    args = (frames[:2], info.boxes[:2], frames[2], info.boxes[2])
    jitter = JitterSettings(brightness=0, gray_prob=0, flip_prob=0)
    plain = SeqTrackProcessing(CONFIG, jitter)(np.random.default_rng(5), *args)
    flipped = SeqTrackProcessing(CONFIG, JitterSettings(brightness=0, gray_prob=0, flip_prob=1))(
        np.random.default_rng(5), *args)
    torch.testing.assert_close(flipped["search"], plain["search"].flip(-1))
    torch.testing.assert_close(flipped["templates"], plain["templates"].flip(-1))
    torch.testing.assert_close(flipped["search_box"][0], 1 - plain["search_box"][0])


def test_sampler_is_deterministic_per_epoch_and_index(got10k):
    sampler = TrackingSampler([got10k], SeqTrackProcessing(CONFIG), samples_per_epoch=10, max_interval=5, seed=3)
    a, b = sampler[4], sampler[4]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(sampler[5]["search"], a["search"])
    sampler.set_epoch(1)
    assert not torch.equal(sampler[4]["search"], a["search"])
    assert len(sampler) == 10


def test_sampler_on_image_dataset(tmp_path):
    write_synthetic_coco(tmp_path, num_images=2, size=(96, 72), seed=1, natural=False)
    sampler = TrackingSampler([CocoSequences(tmp_path)], SeqTrackProcessing(CONFIG.replace(prompt_tokens=4)), 4)
    sample = sampler[0]
    assert sample["sequence"].shape == (9,) and sample["sequence"][4] == CONFIG.start_token
    assert torch.isfinite(sample["search"]).all() and sample["search"].std() > 0.1
    with pytest.raises(ValueError, match="weights"):
        TrackingSampler([CocoSequences(tmp_path)], SeqTrackProcessing(CONFIG), 4, weights=[1, 2])
    with pytest.raises(ValueError, match="jitter setting"):
        JitterSettings(flip_prob=2)
