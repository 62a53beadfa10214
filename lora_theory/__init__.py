"""lora_theory: simulate and derive the large-width training dynamics of LoRA finetuning.

Curated public API; see the README for a tour.
"""

from .config import ModelConfig, TrainConfig
from .inits import INITS, InitSpec, sample_init
from .models import SETTINGS
from .optim import OPTIMIZERS
from .simulate import COLUMNS, Unit, run_unit, simulate
from .transfer import transfer_lr

__all__ = ["COLUMNS", "INITS", "InitSpec", "ModelConfig", "OPTIMIZERS", "SETTINGS", "TrainConfig",
           "Unit", "run_unit", "sample_init", "simulate", "transfer_lr"]
__version__ = "0.1.0"
