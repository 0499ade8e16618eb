"""A worker of the ``limit`` line: the real step runtime (StepRunner: consume, handle concurrently, commit
outputs and offsets in one transaction) with trivial steps that call no model and touch no Redis.

    python -m bench.passthrough STEP --trace FILE [--instance NAME]

Each pass-through step replays, for a ticket, what the real step emitted for the same sample ticket (captured
in process by ``python -m bench.inprocess --line capture``): same topics, same number of records, same
values (so the same record sizes), with the ticket's own correlation ID. The runtime Avro-decodes the input
and Avro-encodes the outputs, as for the real steps. The join is the real Join (it has no model), with its
changelog. Consumer groups and topics are the real ones, so this runs in place of the real workers.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import pickle
import signal
import socket
from typing import Any

from bench.pipeline import template_of
from processors.join import Join
from streams import config
from streams.context import configure_logging
from streams.errors import TriageError
from streams.records import Emit, Record
from streams.runtime import StepRunner
from streams.step import StepContext
from processors.topology import CLASSIFIERS, DRAFTS, ENRICHED, IN, JOINED, ROUTED, VALID
from streams.worker import settle_gc

INPUTS = {"ingest": (IN,), **{f"classify-{c}": (VALID,) for c in CLASSIFIERS}, "route": (JOINED,),
          "retrieve": (ROUTED,), "generate": (ENRICHED,), "gate": (DRAFTS,)}


class Replay:
    """A step that emits what the real step emitted for the ticket's sample template."""

    stateful = False

    def __init__(self, name: str, traces: dict[int, dict[tuple[str, int], list[tuple[str, Any, dict[str, str]]]]]) -> None:
        self.name = name
        self.inputs = INPUTS[name]
        self.traces = traces

    async def handle(self, record: Record, ctx: StepContext) -> list[Emit]:
        cid = record.correlation_id
        try:
            hops = int(record.headers.get("hops", "0") or 0)
            emitted = self.traces[template_of(cid)][(self.name, hops)]
        except (KeyError, ValueError, IndexError):
            raise TriageError(f"no captured output of {self.name} for {cid}", code="NO_TRACE") from None
        out = []
        for topic, value, headers in emitted:
            if isinstance(value, dict) and "correlation_id" in value:
                value = {**value, "correlation_id": cid}
            if "correlation_id" in headers:
                headers = {**headers, "correlation_id": cid}
            out.append(Emit(topic, value, key=cid, headers=headers))
        return out


async def run(step: str, trace_path: str, instance: str) -> None:
    settings = config.load()
    with open(trace_path, "rb") as fh:
        traces = pickle.load(fh)
    obj: Any = Join(settings.join_timeout_s) if step == "join" else Replay(step, traces)
    ctx = StepContext(step, settings, None, None)  # type: ignore[arg-type]  # no models, no Redis
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    settle_gc()  # as a triage worker does: the line measures the runtime, not GC settings
    await StepRunner(obj, ctx, instance=instance).run(stop)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.passthrough", description=__doc__.split("\n\n")[0])
    ap.add_argument("step", choices=[*INPUTS, "join"])
    ap.add_argument("--trace", required=True, help="pickled traces from bench.inprocess --line capture")
    ap.add_argument("--instance", default=f"{socket.gethostname()}-{os.getpid()}")
    args = ap.parse_args()
    configure_logging("WARNING")
    logging.getLogger("triage.runtime").setLevel(logging.ERROR)
    asyncio.run(run(args.step, args.trace, args.instance))


if __name__ == "__main__":
    main()
