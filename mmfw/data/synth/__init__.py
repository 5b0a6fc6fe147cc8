"""Procedural synthetic visual-question-answering (VQA) dataset.

Generates small RGB images of coloured geometric shapes on a plain background together with LLaVA-format
conversation JSON files, so that a vision-language model can be trained and evaluated end-to-end without
downloading anything.

Layout written by :func:`generate_synthetic_vqa`::

    out_dir/
        images/train_000000.png ...  images/eval_000000.png ...
        train.json            # list of LLaVA records
        eval.json
        synth_meta.json       # generation arguments (used by :func:`ensure_synthetic_vqa`)

Each record looks like::

    {"id": "train_000000", "image": "images/train_000000.png", "task": "color",
     "conversations": [{"from": "human", "value": "<image>\\nWhat color is the shape?"},
                       {"from": "gpt", "value": "red"}]}

The image path is relative to the JSON file's directory. The extra ``task`` key names the question family and
can be used for per-task metrics; LLaVA loaders ignore it.

Question families (answers are short lowercase strings, suitable for exact match after
:func:`normalize_answer`):

* ``color``    -- one large shape (a side of half to four fifths of the image); answer is one of :data:`COLORS`.
* ``shape``    -- one large shape; answer is one of :data:`SHAPES`.
* ``position`` -- one shape lying entirely inside one image quadrant; answer is one of :data:`POSITIONS`.
* ``count``    -- 1 to 4 shapes of random type/colour, each nearly filling a different quadrant (the quadrants
  drawn at random); answer is ``"1"`` .. ``"4"``. With ``max_count`` 5 to 9: 1 to ``max_count`` small shapes, each
  in a different cell of a 3x3 grid.

Within each split the task mix is balanced across the requested tasks (or, for the training split, follows
``train_task_weights``) and the answers are balanced within each task (every answer occurs ``n // k`` or
``n // k + 1`` times), and the question paraphrase is drawn independently of the answer, so the question text never
reveals the answer. Shapes are drawn without anti-aliasing, so every
shape pixel has exactly its palette colour (handy for tests), and backgrounds are near-neutral greys that never
coincide with a palette colour. Generation is fully deterministic given the arguments: the same seed produces
byte-identical JSON files and PNG images.
"""

from mmfw.data.answers import normalize_answer
from mmfw.data.synth.dataset import GENERATOR_VERSION, SynthPaths, ensure_synthetic_vqa, generate_synthetic_vqa
from mmfw.data.synth.questions import COUNTS, EXTRA_QUESTION_TASKS, QUESTIONS
from mmfw.data.synth.scenes import MAX_COUNT, TASKS
from mmfw.data.synth.shapes import COLORS, POSITIONS, SHAPES, ShapeSpec, render_scene

__all__ = [
    "COLORS",
    "COUNTS",
    "EXTRA_QUESTION_TASKS",
    "GENERATOR_VERSION",
    "MAX_COUNT",
    "POSITIONS",
    "QUESTIONS",
    "SHAPES",
    "TASKS",
    "ShapeSpec",
    "SynthPaths",
    "ensure_synthetic_vqa",
    "generate_synthetic_vqa",
    "normalize_answer",
    "render_scene",
]
