"""Examples per split of a task, from its options alone (no data read)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("fpt.plan")

# Eval examples assumed per split of a task that does not declare its sizes
# (Task.published_split_sizes) and names none in its options.
DEFAULT_EVAL_EXAMPLES = 1000

_ASSUMED: set[str] = set()  # tasks warned about


def split_sizes(task: str, options: Mapping[str, Any] | None = None) -> dict[str, int | None]:
    """Examples per split of `task` built with `options` (nothing read): the task's own
    `Task.published_split_sizes`; for a task that declares none (a task module of your own), the
    options' `<split>_size` of its evaluated splits, else DEFAULT_EVAL_EXAMPLES each, with a
    warning once, and "train" unknown (None)."""
    from fpt.tasks import TASKS

    cls = TASKS[task]
    opts = cls.options_of(dict(options or {}))
    own = cls.published_split_sizes(opts)
    if own is not None:
        return dict(own)
    if task not in _ASSUMED:
        _ASSUMED.add(task)
        log.warning(
            "%s declares no split sizes (Task.published_split_sizes): fpt plan assumes %s examples per "
            "evaluated split unless its options give <split>_size",
            task,
            DEFAULT_EVAL_EXAMPLES,
        )
    splits = [s for s in cls.eval_splits if s != "val" or cls.has_val(opts)]
    return {
        "train": None,
        **{s: int(opts.get(f"{s}_size", DEFAULT_EVAL_EXAMPLES)) for s in splits},
    }
