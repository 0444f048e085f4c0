"""Does a map show what the network relies on? Measured per attribution method, as the
literature does: noise on the least and most relevant inputs, deletion and insertion on two
substrates, top-two-layer and cascading model randomisation, saliency on the game's objects
(from its RAM), counterfactual interventions on the game state, and closed-loop play.

``metrics`` computes on tensors, ``randomisation`` and ``play`` make what they compare,
``checks`` measures one method with them, ``protocol`` schedules the tasks and ``report``
writes tables and figures.
"""

from .checks import CHECKS, RANDOM, check_checks, measure_method
from .metrics import (
    FRACTION,
    SIGMA,
    SUBSTRATES,
    deletion_insertion,
    noise_agreement,
    object_saliency,
    similarity,
    spearman,
    with_noise,
)
from .play import CHOICES, Sample, closed_loop, sample_frames
from .protocol import run_faithfulness
from .randomisation import cascading_randomisation, randomisation_check, randomised_copy
from .report import markdown_table, plot_cascading, plot_curves

__all__ = [
    "CHECKS", "CHOICES", "FRACTION", "RANDOM", "SIGMA", "SUBSTRATES", "Sample", "cascading_randomisation",
    "check_checks", "closed_loop", "deletion_insertion", "markdown_table", "measure_method",
    "noise_agreement",
    "object_saliency", "plot_cascading", "plot_curves", "randomisation_check", "randomised_copy",
    "run_faithfulness", "sample_frames", "similarity", "spearman", "with_noise",
]
