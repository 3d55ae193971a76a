"""What each config field may hold, in one table: its type and range.

`problems(config)` checks every field that has a rule in `RULES` and names each one that breaks
its rule, so that a run stops at start-up with every bad value listed at once (`experiment.check_config`
adds the checks that involve several fields). Overrides on the command line are parsed into the
field's type by ml_collections before this; the rules catch what parses but cannot work (a
negative size, a leak above 1, a NaN, an unknown dtype) and wrong types written in a config file.
A field without a rule (one a config file adds) is not checked.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import ml_collections

from snnseg_jax import architecture, data, models, neurons, optimization, sparsity, steps, stream

COMPUTE_DTYPES = ("float32", "bfloat16")  # model.dtype: what the layers are written and tested for


@dataclasses.dataclass(frozen=True)
class Rule:
    """Values of `types`, within [low, high] (`low` itself excluded if `above`), or among `choices`."""

    types: tuple[type, ...]
    noun: str  # "integer", "number", ...: what the message calls a value
    low: float = -math.inf
    high: float = math.inf
    above: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False  # None is allowed too
    sequence: bool = False  # a non-empty tuple or list of such values

    def accepts(self, value: Any) -> bool:
        if self.optional and value is None:
            return True
        if self.sequence:
            item = dataclasses.replace(self, sequence=False, optional=False)
            return isinstance(value, (tuple, list)) and len(value) > 0 and all(item.accepts(v) for v in value)
        if not isinstance(value, self.types) or (isinstance(value, bool) and bool not in self.types):
            return False
        if self.choices:
            return value in self.choices
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (
                math.isfinite(value) and (value > self.low if self.above else value >= self.low) and value <= self.high
            )
        return True

    def describe(self) -> str:
        """What the rule asks for, as the message after "must be" says it."""
        if self.choices:
            what = "one of " + ", ".join(self.choices)
        elif self.low in (0, 1) and self.high == math.inf and (self.low == 0) == self.above:
            what = f"a positive {self.noun}"
        elif self.low == 0 and self.high == math.inf:
            what = f"a non-negative {self.noun}"
        elif self.high < math.inf and self.low == -math.inf:
            what = f"{_a(self.noun)} <= {self.high:g}"
        elif self.high < math.inf:
            what = f"{_a(self.noun)} in {'(' if self.above else '['}{self.low:g}, {self.high:g}]"
        elif self.low > -math.inf:
            what = f"{_a(self.noun)} {'>' if self.above else '>='} {self.low:g}"
        else:
            what = _a(self.noun)
        if self.sequence:
            what = f"a non-empty list, each item {what}"
        return f"{what} or None" if self.optional else what


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def integer(low: float = -math.inf, high: float = math.inf) -> Rule:
    return Rule((int,), "integer", low, high)


def number(low: float = -math.inf, high: float = math.inf, *, above: bool = False) -> Rule:
    return Rule((int, float), "finite number" if low == -math.inf else "number", low, high, above)


def one_of(*choices: str) -> Rule:
    return Rule((str,), "name", choices=tuple(choices))


FLAG = Rule((bool,), "boolean (True or False)")
TEXT = Rule((str,), "string")
POSITIVE = integer(1)

RULES: dict[str, Rule] = {
    "seed": integer(0),
    "dataset.name": one_of(*data.BUILDERS),
    "dataset.root": TEXT,
    "dataset.image_size": POSITIVE,
    "dataset.train_split": TEXT,
    "dataset.eval_split": TEXT,
    "dataset.augment": FLAG,
    "dataset.cache_dir": TEXT,
    "dataset.synthetic_seed": integer(0),
    "dataset.synthetic_sizes.*": integer(0),
    "model.name": one_of(*models.MODEL_NAMES),
    "model.width": number(0, above=True),
    "model.timesteps": POSITIVE,
    "model.head": one_of(*architecture.HEADS),
    "model.leak": number(0, 1, above=True),
    "model.threshold": number(0, above=True),
    "model.surrogate": one_of(*neurons.SURROGATES),
    "model.surrogate_scale": dataclasses.replace(number(0, above=True), optional=True),
    "model.membrane_floor": dataclasses.replace(number(high=0), optional=True),
    "model.dtype": one_of(*COMPUTE_DTYPES),
    "model.remat": FLAG,
    "model.fused": FLAG,
    "model.tuned_ops": FLAG,
    "spikes.penalty": number(0),
    "spikes.weighting": one_of(*sparsity.WEIGHTINGS),
    "spikes.target_rate": number(0, 1),
    "spikes.warmup_steps": integer(0),
    "stream_training.enabled": FLAG,
    "stream_training.zero_state_fraction": number(0, 1),
    "stream_training.loss": one_of(*steps.STREAM_LOSSES),
    "distributed.initialize": FLAG,
    "distributed.coordinator_address": TEXT,
    "distributed.num_processes": integer(0),
    "distributed.process_id": integer(-1),
    "batch_size": POSITIVE,
    "num_epochs": integer(0),
    "num_train_steps": integer(),
    "learning_rate": number(0, above=True),
    "weight_decay": number(0),
    "weight_decay_scope": one_of(*optimization.WEIGHT_DECAY_SCOPES),
    "lr_decay_at": number(0, 1),
    "lr_decay_factor": number(0),
    "log_every_steps": POSITIVE,
    "eval_every_steps": integer(),
    "checkpoint_every_steps": POSITIVE,
    "keep_checkpoints": POSITIVE,
    "eval_batch_size": POSITIVE,
    "loader_threads": POSITIVE,
    "prefetch_batches": POSITIVE,
    "skip_nonfinite_steps": FLAG,
    "analysis.noise_sigmas": dataclasses.replace(number(0), sequence=True),
    "analysis.conversion_timesteps": dataclasses.replace(POSITIVE, sequence=True),
    "analysis.conversion_images": POSITIVE,
    "analysis.conversion_threshold_scale": number(0, above=True),
    "analysis.balance_batch_size": POSITIVE,
    "analysis.balance_timesteps": POSITIVE,
    "analysis.activation_images": POSITIVE,
    "analysis.num_samples": POSITIVE,
    "analysis.stream_late_statistics": one_of(*stream.LATE_STATISTICS),
}


def flatten(config: ml_collections.ConfigDict | dict, prefix: str = "") -> dict[str, Any]:
    """`{"model.width": 1.0, ...}`: every leaf field of `config` by its dotted name."""
    fields = {}
    for key, value in config.items() if isinstance(config, dict) else config.to_dict().items():
        if isinstance(value, dict):
            fields.update(flatten(value, f"{prefix}{key}."))
        else:
            fields[f"{prefix}{key}"] = value
    return fields


def rule_for(field: str) -> Rule | None:
    """The rule of `field`, or of the group it belongs to (`"dataset.synthetic_sizes.*"`)."""
    if field in RULES:
        return RULES[field]
    return RULES.get(field.rsplit(".", 1)[0] + ".*") if "." in field else None


def problems(config: ml_collections.ConfigDict) -> dict[str, str]:
    """`{field: "field must be ..., got ..."}` for every field of `config` that breaks its rule."""
    found = {}
    for field, value in flatten(config).items():
        rule = rule_for(field)
        if rule is not None and not rule.accepts(value):
            found[field] = f"{field} must be {rule.describe()}, got {value!r}"
    return found
