"""Training: PPO with RLNET on any ALE game (:mod:`.ppo`), shipping and scoring its checkpoints
(:mod:`.export`), and a callback that records and measures a policy as it learns (:mod:`.callback`)."""

from .export import (
           export_agent,
           greedy_evaluation,
           plot_learning_curve,
           training_wall_time,
           validate_checkpoint,
)
from .ppo import STICKY_PROBABILITY, TrainConfig, TrainingMonitor, train

__all__ = ["STICKY_PROBABILITY", "TrainConfig", "TrainingMonitor", "export_agent", "greedy_evaluation",
           "plot_learning_curve", "train", "training_wall_time", "validate_checkpoint"]
