"""The step runtime: runs one step as a Kafka consumer-transform-producer, exactly once.

How it keeps the promise (every input reaches its outputs once, whatever dies):
- records are consumed in batches and handled concurrently (up to ``max_in_flight``), because a model call
  takes 100 ms to seconds and a partition-serial consumer would cap throughput at partitions / latency;
- a record's outputs are *held* until every earlier record of its partition is done; then the outputs of
  that contiguous prefix and the offset after it are committed in one Kafka transaction
  (``send_offsets_to_transaction``), so a crash replays exactly the records whose outputs were not committed;
- downstream consumers read ``read_committed``; an aborted transaction rewinds the consumer to the last
  committed offsets and drops what was in flight, so nothing is emitted twice;
- a record's handling is bounded by the step's deadline, which bounds how long it holds its partition back;
- when a record still fails, its original bytes go to the step's dead-letter topic with the reason: the DLQ
  record is an output like any other, committed with the offset.

The clients are synchronous, so the consumer runs on one thread and the transactional producer on another;
handlers run on the asyncio loop. A poll returns as soon as one record is there; the committer starts a
transaction as soon as a record is done (at most one every ``commit_interval_s``, and one at a time, so a
transaction carries everything that finished while the previous one was in flight).

One module per job, each owning its state; :mod:`~streams.runtime.runner` holds the loop that joins them:

- ``threads``: the two Kafka threads and client calls with deadlines (a call that never returns: KafkaStuck);
- ``polling``: the consumer, and records and rebalances returned in the order they happened;
- ``ordering``: in-order completion, the held records of each partition and the committable prefix;
- ``transactions``: outputs and offsets in one transaction, fenced against revocations, aborts, timeouts;
- ``backpressure``: a full runner waits for room, then pauses its partitions;
- ``watchdog``: a consumer that stopped fetching, or left its group without a word;
- ``state``: a stateful step's changelog, restored and dropped as partitions move;
- ``handling``: one record through its step (context, decoding, deadline, infrastructure retries);
- ``outputs``: encoding the outputs, and the dead letter when the step failed;
- ``stats``: what the runner has done.

Imports go one way: ``runner`` imports the others, they import only the small ones below them (``threads``,
``polling``, ``ordering``, ``state``, ``stats``) and never ``runner``. Only ``runner`` reads the pipeline's
topology (the step's group, dead-letter topic, changelog and the topics' schemas) and hands it down.
"""
from streams.runtime.runner import StepRunner
from streams.runtime.stats import Stats
from streams.runtime.threads import KafkaStuck

__all__ = ["KafkaStuck", "Stats", "StepRunner"]
