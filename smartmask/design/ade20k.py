"""ADE20K's 150 classes and palette, and the map from our labels onto them: ControlNet-seg's control language.

Why ADE20K: the segmentation ControlNets for SD 1.5 (`lllyasviel/control_v11p_sd15_seg`, `sd-controlnet-seg`) were
trained on photos segmented by an ADE20K model and painted in ADE20K's palette (the annotator's colours are mmseg's
`ADE20KDataset` palette, copied below). A region in any other colour means nothing to them, so a layout is painted
class by class in exactly these 150 colours. (The palette gives "road" and "skyscraper" the same grey: the
standard palette's quirk, kept because the ControlNet learnt it.)

`ade20k_class(label)` finds a label's ADE20K class with `smartmask.inference.synonyms.map_label` over ADE20K's
names and `TABLE`, in that function's order: an explicit None in the table (unmapped on purpose), a label that is
an ADE20K name ("person", "house", "boat"), the table ("dog" -> "animal", "window" -> "windowpane", "couch" ->
"sofa"), then normalised spellings (case, "_", COCO's "-merged"/"-other"/"-stuff" suffixes, "wall-brick" ->
"wall", plurals: "people" -> "person"). Every class of the synthetic world and every COCO-panoptic label has a
decision (a class or an explicit None); docs/rendering.md lists the table.

An unmapped label paints `FALLBACK`, black: the colour of no ADE20K class, so the ControlNet is told nothing there
and the prompt decides what appears. Pixels that no layer covers get it too. (ADE20K "wall" was the other
candidate; it would put walls into outdoor scenes.)
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from smartmask.inference.synonyms import map_label

# (name, RGB) in ADE20K's class order (index = the 0-based class id of the 150-class benchmark). mmseg spells the
# bed class "bed " with a trailing space; it is "bed" here.
# fmt: off
ADE20K: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("wall", (120, 120, 120)), ("building", (180, 120, 120)), ("sky", (6, 230, 230)),  # 0
    ("floor", (80, 50, 50)), ("tree", (4, 200, 3)), ("ceiling", (120, 120, 80)),  # 3
    ("road", (140, 140, 140)), ("bed", (204, 5, 255)), ("windowpane", (230, 230, 230)),  # 6
    ("grass", (4, 250, 7)), ("cabinet", (224, 5, 255)), ("sidewalk", (235, 255, 7)),  # 9
    ("person", (150, 5, 61)), ("earth", (120, 120, 70)), ("door", (8, 255, 51)),  # 12
    ("table", (255, 6, 82)), ("mountain", (143, 255, 140)), ("plant", (204, 255, 4)),  # 15
    ("curtain", (255, 51, 7)), ("chair", (204, 70, 3)), ("car", (0, 102, 200)),  # 18
    ("water", (61, 230, 250)), ("painting", (255, 6, 51)), ("sofa", (11, 102, 255)),  # 21
    ("shelf", (255, 7, 71)), ("house", (255, 9, 224)), ("sea", (9, 7, 230)),  # 24
    ("mirror", (220, 220, 220)), ("rug", (255, 9, 92)), ("field", (112, 9, 255)),  # 27
    ("armchair", (8, 255, 214)), ("seat", (7, 255, 224)), ("fence", (255, 184, 6)),  # 30
    ("desk", (10, 255, 71)), ("rock", (255, 41, 10)), ("wardrobe", (7, 255, 255)),  # 33
    ("lamp", (224, 255, 8)), ("bathtub", (102, 8, 255)), ("railing", (255, 61, 6)),  # 36
    ("cushion", (255, 194, 7)), ("base", (255, 122, 8)), ("box", (0, 255, 20)),  # 39
    ("column", (255, 8, 41)), ("signboard", (255, 5, 153)), ("chest of drawers", (6, 51, 255)),  # 42
    ("counter", (235, 12, 255)), ("sand", (160, 150, 20)), ("sink", (0, 163, 255)),  # 45
    ("skyscraper", (140, 140, 140)), ("fireplace", (250, 10, 15)), ("refrigerator", (20, 255, 0)),  # 48
    ("grandstand", (31, 255, 0)), ("path", (255, 31, 0)), ("stairs", (255, 224, 0)),  # 51
    ("runway", (153, 255, 0)), ("case", (0, 0, 255)), ("pool table", (255, 71, 0)),  # 54
    ("pillow", (0, 235, 255)), ("screen door", (0, 173, 255)), ("stairway", (31, 0, 255)),  # 57
    ("river", (11, 200, 200)), ("bridge", (255, 82, 0)), ("bookcase", (0, 255, 245)),  # 60
    ("blind", (0, 61, 255)), ("coffee table", (0, 255, 112)), ("toilet", (0, 255, 133)),  # 63
    ("flower", (255, 0, 0)), ("book", (255, 163, 0)), ("hill", (255, 102, 0)),  # 66
    ("bench", (194, 255, 0)), ("countertop", (0, 143, 255)), ("stove", (51, 255, 0)),  # 69
    ("palm", (0, 82, 255)), ("kitchen island", (0, 255, 41)), ("computer", (0, 255, 173)),  # 72
    ("swivel chair", (10, 0, 255)), ("boat", (173, 255, 0)), ("bar", (0, 255, 153)),  # 75
    ("arcade machine", (255, 92, 0)), ("hovel", (255, 0, 255)), ("bus", (255, 0, 245)),  # 78
    ("towel", (255, 0, 102)), ("light", (255, 173, 0)), ("truck", (255, 0, 20)),  # 81
    ("tower", (255, 184, 184)), ("chandelier", (0, 31, 255)), ("awning", (0, 255, 61)),  # 84
    ("streetlight", (0, 71, 255)), ("booth", (255, 0, 204)), ("television receiver", (0, 255, 194)),  # 87
    ("airplane", (0, 255, 82)), ("dirt track", (0, 10, 255)), ("apparel", (0, 112, 255)),  # 90
    ("pole", (51, 0, 255)), ("land", (0, 194, 255)), ("bannister", (0, 122, 255)),  # 93
    ("escalator", (0, 255, 163)), ("ottoman", (255, 153, 0)), ("bottle", (0, 255, 10)),  # 96
    ("buffet", (255, 112, 0)), ("poster", (143, 255, 0)), ("stage", (82, 0, 255)),  # 99
    ("van", (163, 255, 0)), ("ship", (255, 235, 0)), ("fountain", (8, 184, 170)),  # 102
    ("conveyer belt", (133, 0, 255)), ("canopy", (0, 255, 92)), ("washer", (184, 0, 255)),  # 105
    ("plaything", (255, 0, 31)), ("swimming pool", (0, 184, 255)), ("stool", (0, 214, 255)),  # 108
    ("barrel", (255, 0, 112)), ("basket", (92, 255, 0)), ("waterfall", (0, 224, 255)),  # 111
    ("tent", (112, 224, 255)), ("bag", (70, 184, 160)), ("minibike", (163, 0, 255)),  # 114
    ("cradle", (153, 0, 255)), ("oven", (71, 255, 0)), ("ball", (255, 0, 163)),  # 117
    ("food", (255, 204, 0)), ("step", (255, 0, 143)), ("tank", (0, 255, 235)),  # 120
    ("trade name", (133, 255, 0)), ("microwave", (255, 0, 235)), ("pot", (245, 0, 255)),  # 123
    ("animal", (255, 0, 122)), ("bicycle", (255, 245, 0)), ("lake", (10, 190, 212)),  # 126
    ("dishwasher", (214, 255, 0)), ("screen", (0, 204, 255)), ("blanket", (20, 0, 255)),  # 129
    ("sculpture", (255, 255, 0)), ("hood", (0, 153, 255)), ("sconce", (0, 41, 255)),  # 132
    ("vase", (0, 255, 204)), ("traffic light", (41, 0, 255)), ("tray", (41, 255, 0)),  # 135
    ("ashcan", (173, 0, 255)), ("fan", (0, 245, 255)), ("pier", (71, 0, 255)),  # 138
    ("crt screen", (122, 0, 255)), ("plate", (0, 255, 184)), ("monitor", (0, 92, 255)),  # 141
    ("bulletin board", (184, 255, 0)), ("shower", (0, 133, 255)), ("radiator", (255, 214, 0)),  # 144
    ("glass", (25, 194, 194)), ("clock", (102, 255, 0)), ("flag", (92, 0, 255)),  # 147
)
# fmt: on
CLASSES: tuple[str, ...] = tuple(name for name, _ in ADE20K)
PALETTE: dict[str, tuple[int, int, int]] = dict(ADE20K)
FALLBACK: tuple[int, int, int] = (0, 0, 0)

# Our label (normalised: lower case, "_" -> " ", COCO suffixes stripped) -> ADE20K class, where the names differ;
# None = deliberately unmapped (ADE20K has no such class, and the nearest one would draw something else).
# Labels that are ADE20K names, or whose plural / "-variant" base is, need no entry.
# fmt: off
TABLE: dict[str, str | None] = {
    # the synthetic world (smartmask.synth.world THINGS / STUFF) where ADE20K's name differs
    "dog": "animal", "bird": "animal", "window": "windowpane",
    "cloud": "sky",  # ADE20K annotates clouds as sky
    # COCO-panoptic things
    "motorcycle": "minibike", "stop sign": "signboard", "cat": "animal", "horse": "animal", "sheep": "animal",
    "cow": "animal", "elephant": "animal", "bear": "animal", "zebra": "animal", "giraffe": "animal",
    "backpack": "bag", "handbag": "bag", "suitcase": "bag", "tie": "apparel", "frisbee": "ball",
    "sports ball": "ball", "wine glass": "glass", "cup": "glass", "bowl": "plate", "banana": "food",
    "apple": "food", "sandwich": "food", "orange": "food", "broccoli": "food", "carrot": "food",
    "hot dog": "food", "pizza": "food", "donut": "food", "cake": "food", "couch": "sofa", "potted plant": "plant",
    "dining table": "table", "tv": "television receiver", "laptop": "computer", "teddy bear": "plaything",
    "train": None, "fire hydrant": None, "parking meter": None, "umbrella": None, "skis": None,
    "snowboard": None, "kite": None, "baseball bat": None, "baseball glove": None, "skateboard": None,
    "surfboard": None, "tennis racket": None, "fork": None, "knife": None, "spoon": None, "mouse": None,
    "remote": None, "keyboard": None, "cell phone": None, "toaster": None, "scissors": None, "hair drier": None,
    "toothbrush": None,
    # COCO-panoptic stuff (after normalisation; "wall-brick", "floor-wood", "door-stuff", ... reach their base)
    "banner": "flag", "cardboard": "box", "fruit": "food", "gravel": "earth", "dirt": "earth",
    "playingfield": "field", "pavement": "sidewalk", "window-blind": "blind", "net": None, "platform": None,
    "railroad": None, "roof": None, "snow": None, "paper": None,
    # common free-form names (COCOA, captions, users)
    "ground": "earth", "street": "road", "ocean": "sea", "bush": "plant", "shrub": "plant", "carpet": "rug",
    "man": "person", "woman": "person", "child": "person", "boy": "person", "girl": "person",
    "sailboat": "boat", "television": "television receiver", "picture": "painting", "cupboard": "cabinet",
    "trash can": "ashcan", "street light": "streetlight", "lamp post": "streetlight",
}
# fmt: on
# The table's own keys join the vocabulary so that their plurals and variants match too ("dogs" -> "dog" ->
# "animal"); map_label alone looks only the exact and normalised label up in the table.
_VOCAB = (*CLASSES, *(key for key, cls in TABLE.items() if cls))


def ade20k_class(label: str) -> str | None:
    """The ADE20K class name for one of our labels, or None when it has none (see the module docstring)."""
    hit = map_label(label, _VOCAB, TABLE)
    return None if hit is None else TABLE.get(hit, hit)


def ade20k_colour(label: str) -> tuple[int, int, int]:
    """The ADE20K palette colour a label is painted in; `FALLBACK` (black) when it has no ADE20K class."""
    cls = ade20k_class(label)
    return FALLBACK if cls is None else PALETTE[cls]


def paint(owner_HW: np.ndarray, labels: Iterable[str]) -> np.ndarray:
    """(H, W, 3) uint8 control image: each pixel in the ADE20K colour of the label of the layer that owns it
    (`owner_HW`: layer index per pixel, -1 where none, as `LayeredLayout.owner_HW()`), -1 in `FALLBACK`."""
    lut = np.array([*(ade20k_colour(lab) for lab in labels), FALLBACK], dtype=np.uint8)
    own = np.asarray(owner_HW)
    if own.size and (own.max(initial=-1) >= len(lut) - 1 or own.min(initial=-1) < -1):
        raise ValueError(f"owner map holds layer indices outside -1..{len(lut) - 2}")
    # -1 indexes the last row (FALLBACK): one gather for the whole picture.
    return lut[own]
