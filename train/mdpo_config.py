"""Typed configuration of the multi-turn DPO stage (every field with help text).

Defaults follow the paper's mDPO setup where it gives one (lr 5e-7, batch 32, beta 0.1 from
its search space) and lambda = 1 where it does not.
"""

from __future__ import annotations

from typing import Annotated, Literal

from engine.config_cli import doc
from train.sft_config import TrainConfig


class MDPOConfig(TrainConfig, kw_only=True, forbid_unknown_fields=True):
    learning_rate: Annotated[float, doc("peak learning rate of AdamW", gt=0)] = 5e-7
    batch_size: Annotated[int, doc("pairs per optimizer step across all processes", ge=1)] = 32
    micro_batch_size: Annotated[int, doc("pairs per forward pass per process (chosen and rejected are packed together)", ge=1)] = 2
    beta: Annotated[float, doc("eta/beta of the DPO sigmoid: scale of the summed log-ratios", gt=0)] = 0.1
    sft_weight: Annotated[float, doc("lambda: weight of the NLL of the chosen trajectory's assistant tokens added to the mDPO loss", ge=0)] = 1.0
    turn_weighting: Annotated[Literal["uniform", "dmpo"], doc("uniform = plain sum over assistant turns (the paper); dmpo = discounted, "
                                                              "length-normalised turn weights gamma^h (1-gamma)/(1-gamma^H) as in DMPO")] = "uniform"
    turn_discount: Annotated[float, doc("gamma of the dmpo turn weighting", gt=0, le=1)] = 0.9
    share_prefix: Annotated[bool, doc("compute the tokens chosen and rejected share (system, tools, common turns) once per pair, with a tree "
                                      "attention mask; same loss, less work")] = True
    ref_model: Annotated[str, doc("reference policy checkpoint (default: the --model being trained, i.e. the SFT model)")] = ""
    ref_cache_dir: Annotated[str, doc("where reference log-probs are cached (default: <data>/train_cache)")] = ""
