"""Layout from a real image: tiny random Mask2Former through the production loader → SceneLayout; the COCO-panoptic
synonym table; ground-truth layouts from the lake painted bit-identically to the training sampler's S_k."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from smartmask.conditioning.grid import resize_nearest
from smartmask.conditioning.vocabulary import Vocabulary
from smartmask.inference.layout import (
    UNKNOWN,
    UNKNOWN_GREY,
    LayoutError,
    Region,
    SceneLayout,
    layout_from_lake,
    layout_image,
    parse_layout_ref,
)
from smartmask.inference.segment import PanopticSegmenter, SegmenterConfig
from smartmask.inference.synonyms import (
    COCO_PANOPTIC_LABELS,
    COCO_PANOPTIC_STUFF,
    SYNONYMS,
    SynonymError,
    label_map,
    load_synonyms,
    map_label,
)
from smartmask.lake.schemas import VOCABULARY
from smartmask.pretrained import ModelNotFound, model_revision
from smartmask.synth.world import STUFF, THINGS
from smartmask.training.samples import LayerIndex, SampleConfig, TrainingSampler

# The segmenter's label set: COCO-panoptic names; the last three map onto nothing in the synthetic world.
SEG_LABELS = ("person", "dining table", "sky-other-merged", "sea", "wall-other-merged", "giraffe", "truck",
              "pavement-merged")
ANY = SegmenterConfig(threshold=0.0, mask_threshold=0.0, overlap_mask_area_threshold=0.0)  # keep every segment
NONE_ONLY = (1.0, 0.0, 0.0, 0.0)  # guidance mix: mask-free, so the sampler's layout is S_k itself


def build_tiny_mask2former(out_dir: Path, seed: int = 36) -> Path:
    """A ~1.3M-parameter Mask2Former (1-block Swin stages, 12 queries) + its image processor (64 px short side).
    Initialised wide (std 0.5) so that random queries split the image into several segments; seed 36 gives
    two tables, two trucks (unknown) and a wall on `scene_image()`."""
    import torch
    from transformers import (
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessor,
        SwinConfig,
    )

    torch.manual_seed(seed)
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = Mask2FormerConfig(backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32,
                            encoder_feedforward_dim=32, encoder_layers=1, decoder_layers=2, num_attention_heads=2,
                            dim_feedforward=32, num_queries=12, init_std=0.5,
                            id2label=dict(enumerate(SEG_LABELS)), label2id={n: i for i, n in enumerate(SEG_LABELS)})
    Mask2FormerForUniversalSegmentation(cfg).eval().save_pretrained(out_dir)
    Mask2FormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}, size_divisor=32).save_pretrained(out_dir)
    return out_dir


def synth_vocab():
    v = Vocabulary.build([(lab, False) for lab in THINGS] + [(lab, True) for lab in STUFF])
    rows = [r | {"instances": 0} for r in v.rows()]
    return Vocabulary.read(pa.Table.from_pylist(rows, schema=VOCABULARY))


def scene_image(h: int = 120, w: int = 160) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 3] = (120, 180, 250)
    img[h // 3 : 2 * h // 3] = (30, 60, 200)
    img[2 * h // 3 :] = (120, 90, 40)
    img[h * 5 // 12 : h * 11 // 12, w * 3 // 8 : w * 9 // 16] = (230, 30, 30)
    return img


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def segmenter_dir(tmp_path_factory) -> Path:
    return build_tiny_mask2former(tmp_path_factory.mktemp("m2f"))


@pytest.fixture(scope="module")
def lake(synthetic_lake) -> Path:
    return synthetic_lake["lake"]


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


# ---------------------------------------------------------------------------------------------------------------
# Ground truth → S_I equals the training sampler's S_k.


@pytest.mark.parametrize("R", [32, 200])  # 200 > 160×120: the sampler's upsampling path
def test_ground_truth_layout_is_bit_identical_to_training_sample(lake, R):
    index = LayerIndex.from_lake(lake, "synth", _version(lake), split=None)
    sampler = TrainingSampler(index, SampleConfig(resolution=R, guidance_mix=NONE_ONLY), seed=3)
    seen = set()
    for i in range(24):
        s = sampler.sample(i)
        scene, vocab = layout_from_lake(lake, "synth", s["image_id"], s["k"])
        assert len(scene.regions) == s["k"] and scene.unknown == 0
        assert scene.source == f"ground-truth:synth@{_version(lake)}:{s['image_id']}:{s['k']}"
        got = layout_image(scene, vocab, R)
        assert got.dtype == np.float32 and got.shape == (R, R, 3)
        assert np.array_equal(got, s["layout"].transpose(1, 2, 0)), (s["image_id"], s["k"])
        seen.add((s["image_id"], s["k"]))
    assert len(seen) >= 8  # many different images and depths were compared


def _version(lake: Path) -> str:
    return next((lake / "datasets" / "name=synth").glob("version=*")).name.split("=", 1)[1]


def test_ground_truth_layout_is_the_layers_back_to_front(lake):
    index = LayerIndex.from_lake(lake, "synth", _version(lake), split=None)
    j = 0
    image_id = str(index.image_ids[j])
    scene, vocab = layout_from_lake(lake, f"synth@{_version(lake)}", image_id)  # K omitted: every layer
    n = int(index.layer_start[j + 1] - index.layer_start[j])
    assert len(scene.regions) == n and (scene.height, scene.width) == (120, 160)
    assert scene.labels == tuple(index.label(t) for t in range(index.layer_start[j], index.layer_start[j + 1]))
    assert all(r.mask_HW.dtype == bool and r.mask_HW.any() for r in scene.regions)
    assert scene.regions[0].is_stuff  # the synthetic world's back-most layer is sky or wall
    empty, _ = layout_from_lake(lake, "synth", image_id, 0)
    assert empty.regions == () and not layout_image(empty, vocab, 16).any()  # nothing painted: black


def test_ground_truth_bad_references_are_one_line_errors(lake):
    image_id = "1"
    n = len(layout_from_lake(lake, "synth", image_id)[0].regions)
    for args in [("nope", image_id, None), ("synth@0000", image_id, None), ("synth", "no-such-image", None),
                 ("synth", image_id, n + 1), ("synth", image_id, -1)]:
        with pytest.raises(ValueError) as exc:
            layout_from_lake(lake, *args)
        _one_line(exc)
    with pytest.raises(LayoutError, match="out of range"):
        layout_from_lake(lake, "synth", image_id, n + 1)
    assert parse_layout_ref("synth@abc:17:3") == ("synth@abc", "17", 3)
    assert parse_layout_ref("synth:17") == ("synth", "17", None)
    for bad in ["synth", "synth:17:x", ":17", "a:b:1:2"]:
        with pytest.raises(LayoutError):
            parse_layout_ref(bad)


def test_unknown_regions_are_grey_and_occupy_space():
    vocab = synth_vocab()
    H, W = 40, 60
    sky = np.zeros((H, W), bool)
    sky[:20] = True
    blob = np.zeros((H, W), bool)
    blob[10:30, 10:30] = True
    person = np.zeros((H, W), bool)
    person[25:40, 20:25] = True
    scene = SceneLayout(H, W, (Region("sky", "sky-other-merged", sky, True, 0.9),
                               Region(UNKNOWN, "giraffe", blob, False, 0.8),
                               Region("person", "person", person, False, 0.7)), "test")
    assert scene.unknown == 1 and scene.unknown_labels == ("giraffe",)
    img = layout_image(scene, vocab, W)  # R = W: columns map 1:1
    grey = np.asarray(UNKNOWN_GREY, np.float32) / 255.0
    painted = resize_nearest(blob & ~person, W)
    assert np.array_equal(img[painted], np.broadcast_to(grey, img[painted].shape))
    pid = vocab.labels.index("person")
    assert np.allclose(img[resize_nearest(person, W)], vocab.colours[pid] / 255.0)  # later over earlier
    assert not img[~resize_nearest(sky | blob | person, W)].any()  # background black
    assert not np.any(np.all(vocab.colours == np.asarray(UNKNOWN_GREY, np.uint8), axis=1))  # grey is no label's
    # A label the model's vocabulary lacks: an error, or (explicitly) unknown.
    odd = SceneLayout(H, W, (Region("giraffe", "giraffe", blob, False, 1.0),), "test")
    with pytest.raises(LayoutError) as exc:
        layout_image(odd, vocab, 8)
    _one_line(exc)
    assert odd.restricted_to(vocab).unknown == 1 and odd.restricted_to(vocab).unknown_labels == ("giraffe",)
    with pytest.raises(LayoutError):
        SceneLayout(H, W, (Region("sky", "sky", sky[:10], True, 1.0),), "test")  # mask of another size


# ---------------------------------------------------------------------------------------------------------------
# The synonym table.

EXPECTED_SYNTH = {
    "person": "person", "car": "car", "boat": "boat", "bench": "bench", "bird": "bird", "dog": "dog",
    "bottle": "bottle", "chair": "chair", "couch": "sofa", "potted plant": "plant", "dining table": "table",
    "vase": "vase", "flower": "plant", "house": "house", "light": "lamp", "playingfield": "grass", "river": "water",
    "sea": "water", "wall-brick": "wall", "wall-stone": "wall", "wall-tile": "wall", "wall-wood": "wall",
    "water-other": "water", "window-blind": "window", "window-other": "window", "tree-merged": "tree",
    "sky-other-merged": "sky", "table-merged": "table", "floor-wood": "floor", "floor-other-merged": "floor",
    "grass-merged": "grass", "building-other-merged": "house", "wall-other-merged": "wall", "rug-merged": "floor",
}  # fmt: skip


def test_every_coco_panoptic_class_maps_or_is_unknown():
    assert len(COCO_PANOPTIC_LABELS) == 133 == len(set(COCO_PANOPTIC_LABELS)) and len(COCO_PANOPTIC_STUFF) == 53
    vocab = synth_vocab()
    mapping = label_map(COCO_PANOPTIC_LABELS, vocab.labels)
    assert set(mapping) == set(COCO_PANOPTIC_LABELS)
    mapped = {s: m for s, m in mapping.items() if m is not None}
    assert mapped == EXPECTED_SYNTH  # exactly these 34 map; the other 99 are reported unknown
    assert set(SYNONYMS) <= set(COCO_PANOPTIC_LABELS)  # no typo'd keys in the default table
    for s in ("giraffe", "road", "pavement-merged", "truck", "ceiling-merged", "snow"):
        assert mapping[s] is None


def test_map_label_order_and_normalisation():
    assert map_label("dining table", ["dining table", "table"]) == "dining table"  # exact match first
    assert map_label(" Wall-Other-Merged", ["wall"]) == "wall"  # normalised
    assert map_label("door-stuff", ["door"]) == "door"
    assert map_label("mirror-stuff", ["mirrors"]) == "mirrors"  # plural
    assert map_label("skis", ["ski"]) == "ski" and map_label("people", ["person"]) == "person"
    assert map_label("couch", ["Sofa"]) == "Sofa"  # the vocabulary's own spelling comes back
    assert map_label("hot dog", ["dog"]) is None  # no last-word guessing
    assert map_label("sea", ["lake"]) is None


def test_user_override_table(tmp_path):
    t = load_synonyms({"road": "floor", "sea": None})
    vocab = ["floor", "water", "sea"]
    assert map_label("road", vocab, t) == "floor" and map_label("sea", vocab, t) is None  # null beats exact
    assert map_label("river", vocab, t) == "water"  # defaults kept
    f = tmp_path / "syn.json"
    f.write_text(json.dumps({"pavement-merged": "floor"}))
    assert map_label("pavement-merged", vocab, load_synonyms(f)) == "floor"
    for bad in ["[1, 2]", "{not json", json.dumps({"road": 3})]:
        f.write_text(bad)
        with pytest.raises(SynonymError) as exc:
            load_synonyms(f)
        _one_line(exc)
    with pytest.raises(SynonymError):
        load_synonyms(tmp_path / "missing.json")


# ---------------------------------------------------------------------------------------------------------------
# The segmenter.


def _reference_segments(seg: PanopticSegmenter, image: np.ndarray, fuse: set[str]) -> tuple[np.ndarray, dict]:
    """The processor's own panoptic output for `image` at its size: id map and {segment id: label}."""
    import torch

    inputs = seg.processor(images=image, return_tensors="pt")
    with torch.inference_mode():
        out = seg.model(**inputs)
    ids = {i for i, n in enumerate(SEG_LABELS) if n in fuse}
    res = seg.processor.post_process_panoptic_segmentation(out, threshold=0.0, mask_threshold=0.0,
                                                           overlap_mask_area_threshold=0.0, label_ids_to_fuse=ids,
                                                           target_sizes=[image.shape[:2]])[0]
    return res["segmentation"].numpy(), {d["id"]: SEG_LABELS[d["label_id"]] for d in res["segments_info"]}


def test_segmenter_layout_covers_every_segment_in_order(segmenter_dir):
    seg = PanopticSegmenter.load(segmenter_dir, device="cpu", config=ANY)
    assert seg.id == f"mask2former:{segmenter_dir}@{model_revision(segmenter_dir)}"
    vocab = synth_vocab()
    image = scene_image()
    scene = seg.segment(image, vocab)
    ref, ref_labels = _reference_segments(seg, image, set(COCO_PANOPTIC_STUFF))
    # The seed gives several segments: a mapped thing, mapped stuff, and a class the vocabulary lacks.
    unmapped = {"giraffe", "truck", "pavement-merged"}
    assert len(ref_labels) >= 4 and {"dining table", "wall-other-merged"} <= set(ref_labels.values())
    assert unmapped & set(ref_labels.values())
    assert len(scene.regions) == len(ref_labels)  # one region per segment: unknowns counted, never dropped
    assert scene.source == f"segmenter:{seg.id}" and (scene.height, scene.width) == (120, 160)
    got = sorted((r.source_label, np.flatnonzero(r.mask_HW).tolist()) for r in scene.regions)
    want = sorted((lab, np.flatnonzero(ref == sid).tolist()) for sid, lab in ref_labels.items())
    assert got == want
    for r in scene.regions:
        assert r.mask_HW.dtype == bool and r.mask_HW.shape == (120, 160) and r.mask_HW.any()
        assert r.label == (EXPECTED_SYNTH.get(r.source_label) or UNKNOWN)
    assert scene.unknown == sum(lab in unmapped for lab in ref_labels.values()) >= 1
    assert set(scene.unknown_labels) == unmapped & set(ref_labels.values())
    # Back to front: stuff (largest first), then things by the lowest row of their mask.
    kinds = [r.is_stuff for r in scene.regions]
    assert kinds == sorted(kinds, reverse=True) and any(kinds)
    stuff_areas = [int(r.mask_HW.sum()) for r in scene.regions if r.is_stuff]
    assert stuff_areas == sorted(stuff_areas, reverse=True)
    bottoms = [int(np.flatnonzero(r.mask_HW.any(1))[-1]) for r in scene.regions if not r.is_stuff]
    assert bottoms == sorted(bottoms) and bottoms
    # S_I: unknown segments show up in grey (R = 160 keeps every column of a 160-wide image).
    img = layout_image(scene, vocab, 160)
    grey = np.all(img == np.asarray(UNKNOWN_GREY, np.float32) / 255.0, axis=-1)
    assert grey.any()


def test_segmenter_large_image_runs_on_a_downscaled_copy(segmenter_dir):
    cfg = SegmenterConfig(max_side=200, threshold=0.0, mask_threshold=0.0, overlap_mask_area_threshold=0.0)
    seg = PanopticSegmenter.load(segmenter_dir, device="cpu", config=cfg)
    vocab = synth_vocab()
    big = np.asarray(Image.fromarray(scene_image()).resize((4000, 3000), Image.Resampling.NEAREST))
    scene = seg.segment(big, vocab)
    small = seg.segment(np.asarray(Image.fromarray(big).resize((200, 150), Image.Resampling.BILINEAR)), vocab)
    assert (scene.height, scene.width) == (3000, 4000) and len(scene.regions) == len(small.regions) >= 2
    ys = np.minimum(((np.arange(3000) + 0.5) * (150 / 3000)).astype(int), 149)
    xs = np.minimum(((np.arange(4000) + 0.5) * (200 / 4000)).astype(int), 199)
    # Same segments, each the nearest upscale of the copy's (matched as a set: areas, hence ties, change scale).
    got = sorted((r.source_label, np.packbits(r.mask_HW).tobytes()) for r in scene.regions)
    want = sorted((s.source_label, np.packbits(s.mask_HW[ys[:, None], xs[None, :]]).tobytes()) for s in small.regions)
    assert got == want and all(r.mask_HW.shape == (3000, 4000) for r in scene.regions)


def test_segmenter_no_segments_and_bad_input(segmenter_dir, tmp_path):
    strict = PanopticSegmenter.load(segmenter_dir, device="cpu", config=SegmenterConfig(threshold=1.0))
    scene = strict.segment(scene_image(), synth_vocab())
    assert scene.regions == () and scene.unknown == 0  # nothing above the threshold: an empty layout
    for bad in [scene_image().astype(np.float32), scene_image()[..., 0], np.zeros((0, 4, 3), np.uint8)]:
        with pytest.raises(LayoutError) as exc:
            strict.segment(bad, synth_vocab())
        _one_line(exc)
    with pytest.raises(ModelNotFound):
        PanopticSegmenter.load(tmp_path / "no-such-model")
    with pytest.raises(ValueError):
        SegmenterConfig(threshold=1.5)
