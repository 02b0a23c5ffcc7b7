"""mypt: train small GPT language models on your own text, with checkpoints you can read and resume."""

from mypt.bundle import get_model_info
from mypt.config import GPTConfig
from mypt.errors import MyptError

__all__ = ["GPT", "GPTConfig", "MyptError", "get_model_info", "load_model"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """GPT and load_model need torch; importing them only when used keeps `import mypt` (and
    `mypt inspect`) free of torch's second of start-up."""
    if name == "GPT":
        from mypt.model import GPT

        return GPT
    if name == "load_model":
        from mypt.bundle import load_model

        return load_model
    raise AttributeError(f"module 'mypt' has no attribute {name!r}")
