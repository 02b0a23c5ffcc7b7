"""mypt: train small GPT language models on your own text, with checkpoints you can read and resume."""

from mypt.bundle import get_model_info, load_model
from mypt.errors import MyptError
from mypt.model import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig", "MyptError", "get_model_info", "load_model"]
__version__ = "0.1.0"
