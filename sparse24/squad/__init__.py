"""SQuAD v1.1 fine-tuning and evaluation of dense and 2:4 sparse models.

    from sparse24.squad import run
    results = run(model="bert-base-cased", offline=True)

Modules: ``data`` (hub, local files or the offline split of the dev set), ``preprocess`` (windows
and labels), ``postprocess`` (logits to answer text), ``metric`` (official Exact Match / F1),
``train`` (Hugging Face Trainer, torchrun-ready), ``evaluate``, ``report`` (JSON, markdown, PNG),
``pipeline`` (the experiment), ``cli`` (its command line), ``tiny`` (offline stand-ins for tests).
Importing this package does not import ``transformers`` or ``datasets``.
"""

from sparse24.squad.data import SquadData, SquadExample, load_squad
from sparse24.squad.metric import exact_match, f1, normalize_answer, squad_v1_scores
from sparse24.squad.pipeline import SquadConfig, run

__all__ = [
    "SquadConfig",
    "SquadData",
    "SquadExample",
    "exact_match",
    "f1",
    "load_squad",
    "normalize_answer",
    "run",
    "squad_v1_scores",
]
