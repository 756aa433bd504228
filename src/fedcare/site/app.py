"""The site application: middleware around the runtime, one entry point per task.

Middleware ("mods", as in Flower) are plain callables ``mod(task, next_handler) -> Reply``; the
policy engine and plan approval (governance) plug in here, before any training runs. An error
anywhere becomes an error reply with a reason, never an exception across the grid.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from fedcare.data.base import SiteData
from fedcare.errors import FedcareError
from fedcare.records.messages import Reply, Task
from fedcare.site.compress import CompressionMod
from fedcare.site.he import HEMod
from fedcare.site.private import DistributedNoiseMod
from fedcare.site.runtime import SiteRuntime
from fedcare.site.secagg import SecAggMod

__all__ = ["Handler", "Mod", "SiteApp"]

Handler = Callable[[Task], Reply]
Mod = Callable[[Task, Handler], Reply]


class SiteApp:
    """One site: its data, its runtime and its middleware."""

    def __init__(
        self,
        data: SiteData,
        *,
        mods: Sequence[Mod] = (),
        state_dir: Path | None = None,
        simulated: bool = False,
        he_secret: Path | None = None,
    ) -> None:
        self.site_id = data.site_id
        self.runtime = SiteRuntime(data, state_dir=state_dir, simulated=simulated)
        # secure aggregation is the innermost mod: it masks what training produced
        secagg = SecAggMod(data.site_id, state_dir, simulated=simulated)
        # encryption (privacy mode 'encrypted') sits just outside it; it passes other tasks on
        he = HEMod(data.site_id, he_secret, simulated=simulated)
        # privacy mode 'private': clip and add this site's noise share before masking
        noise = DistributedNoiseMod(simulated=simulated)
        # update compression (mode 'open' only) is innermost: it sees the update as trained
        self.compression = CompressionMod(state_dir)
        self.mods: tuple[Mod, ...] = (*mods, he, secagg, noise, self.compression)

    def _dispatch(self, task: Task) -> Reply:
        if task.site_id != self.site_id:
            return Reply.failure(
                task, "wrong-site", f"task for {task.site_id!r} reached site {self.site_id!r}"
            )
        handlers = {
            "fit": self.runtime.fit,
            "evaluate": self.runtime.evaluate,
            "stats": self.runtime.stats,
            "analytics": self.runtime.analytics,
        }
        return handlers[task.kind](task)

    def __call__(self, task: Task) -> Reply:
        handler: Handler = self._dispatch
        for mod in reversed(self.mods):
            handler = _wrap(mod, handler)
        try:
            return handler(task)
        except FedcareError as err:  # a study package's errors carry their own code
            code = getattr(err, "code", None)
            reply = Reply.failure(task, str(code or type(err).__name__), str(err))
            isolation = getattr(err, "isolation", None)  # how the failing package ran
            if isinstance(isolation, str):
                reply = replace(reply, info={"package_isolation": isolation})
            return reply
        except Exception as err:  # report, never crash the agent
            return Reply.failure(
                task, "exception", traceback.format_exception_only(type(err), err)[-1].strip()
            )


def _wrap(mod: Mod, inner: Handler) -> Handler:
    return lambda task: mod(task, inner)
