"""The spec files shipped in models/ and inference/, split by the kind of model they are for."""

import tomllib
from pathlib import Path

from pydantic import ValidationError

from ppgen.spec.load import is_bayes_tree
from ppgen.spec.schema import SVISpec

REPO = Path(__file__).resolve().parents[1]
ALL_MODEL_SPECS = sorted((REPO / "models").glob("**/*.toml"))
# Generative models and declarative Bayesian models (kind = "bayes", with [variables]).
BAYES_SPECS = [path for path in ALL_MODEL_SPECS if is_bayes_tree(tomllib.loads(path.read_text()))]
MODEL_SPECS = [path for path in ALL_MODEL_SPECS if path not in BAYES_SPECS]


def _is_generative_inference(path: Path) -> bool:
    try:
        SVISpec.model_validate(tomllib.loads(path.read_text()).get("inference", {}))
    except ValidationError:
        return False
    return True


ALL_INFERENCE_SPECS = sorted((REPO / "inference").glob("*.toml"))
INFERENCE_SPECS = [path for path in ALL_INFERENCE_SPECS if _is_generative_inference(path)]
BAYES_INFERENCE_SPECS = [path for path in ALL_INFERENCE_SPECS if not _is_generative_inference(path)]
