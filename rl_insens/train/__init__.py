"""Training: PPO with RLNET on any ALE game (:mod:`.ppo`), and a callback that records and
measures a policy as it learns (:mod:`.callback`)."""

from .ppo import (
    STICKY_PROBABILITY,
    TrainConfig,
    TrainingMonitor,
    export_agent,
    greedy_evaluation,
    plot_learning_curve,
    train,
    training_wall_time,
    validate_checkpoint,
)

__all__ = ["STICKY_PROBABILITY", "TrainConfig", "TrainingMonitor", "export_agent", "greedy_evaluation",
           "plot_learning_curve", "train", "training_wall_time", "validate_checkpoint"]
