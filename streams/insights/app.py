"""The insights worker: a faust-streaming application over every pipeline's terminal topics.

Each terminal record is read (:mod:`ends`) and folded (:mod:`windows`) into a tumbling-window table kept in a
Kafka changelog, keyed by pipeline, tenant and the record's source partition: a key's writes then come from
one partition, in order, and its aggregate carries the offset of the last record in it, so a record read again
after a crash or a restart (faust commits at least once) is recognised and not counted twice. Windows are by
event time (the terminal record's timestamp). The worker serves the current windows as JSON on loopback
(``/insights``); a timer compares closed windows with their baseline and writes alerts to ``triage.alerts``.

What the tables guarantee: every committed terminal record counted once, in the window of its timestamp; a
record of an aborted transaction never (the consumer reads committed records only).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections import defaultdict
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_kafka

from streams import pipelines
from streams.config import Settings
from streams.insights import alerts, ends, windows
from streams.insights.alerts import ALERTS_TOPIC
from streams.insights.settings import InsightsSettings
from streams.pipeline import Pipeline
from streams.records import decode_headers

log = logging.getLogger("triage.insights")
DAY_S = 86_400
ALERT_HORIZON_MS = 3_600_000
SESSION_TIMEOUT_S = 10.0
"""Short, so a worker started after a kill -9 waits little for the dead one to leave the group (see rewind)."""


class _ReadCommittedThread(faust_kafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # faust reads committed records only under its own exactly-once mode, which we do not use (it loses
        # table updates on a kill -9). The workers write terminal records in transactions: an aborted one
        # (a worker killed mid-commit) must never be counted. aiokafka reads this at start().
        consumer._isolation_level = "read_committed"
        return consumer


class _Consumer(faust_kafka.Consumer):
    def _new_consumer_thread(self) -> faust_kafka.AIOKafkaConsumerThread:
        return _ReadCommittedThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_kafka.Transport):
    Consumer = _Consumer


class _App(faust.App):
    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


def terminal_topics(settings: Settings, existing: set[str]) -> dict[str, Pipeline]:
    """``{topic: pipeline}`` for every terminal topic of a pipeline this machine knows (the shipped ones and
    the one these settings name) that exists on the cluster."""
    specs = [*pipelines.shipped(), *([settings.pipeline] if settings.pipeline else [])]
    out: dict[str, Pipeline] = {}
    for spec in specs:
        try:
            p = pipelines.load(spec)
        except Exception:  # noqa: BLE001 - a pipeline that cannot load has no topics to read
            log.warning("pipeline not loadable; its topics are not read", extra={"fields": {"pipeline": spec}})
            continue
        for t in p.terminal_topics():
            if t in existing:
                out.setdefault(t, p)
    return out


def app_id(settings: Settings) -> str:
    p = pipelines.load(settings.pipeline or None)
    return f"{p.group_prefix or p.name}.insights"


def build(settings: Settings, conf: InsightsSettings, topics: Mapping[str, Pipeline],
          replication: int = 1, topics_now: Any = None) -> tuple[faust.App, "Tables"]:
    """The faust app reading ``topics``, and the tables it fills."""
    app = _App(app_id(settings), broker=[f"kafka://{b}" for b in settings.bootstrap.split(",")],
               store="memory://", processing_guarantee="at_least_once", web_enabled=True,
               web_bind="127.0.0.1", web_port=conf.port, web_host="127.0.0.1",
               topic_partitions=settings.partitions, topic_replication_factor=replication,
               consumer_auto_offset_reset="earliest", broker_commit_every=100, broker_commit_interval=1.0,
               table_cleanup_interval=60.0, key_serializer="json", value_serializer="json",
               broker_session_timeout=SESSION_TIMEOUT_S)
    table = app.Table("windows", default=dict, partitions=settings.partitions)
    windowed = table.tumbling(conf.window_s, expires=timedelta(seconds=DAY_S + conf.window_s)).relative_to_stream()
    source = app.topic(*topics, key_serializer="raw", value_serializer="raw")
    alerts_topic = app.topic(ALERTS_TOPIC, key_serializer="raw", value_serializer="raw", partitions=1)
    tables = Tables(table, conf, topics, settings)

    @app.agent(source, name="insights.fold")
    async def fold(stream: faust.StreamT) -> None:
        async for event in stream.events():
            m = event.message
            pipeline = topics[m.topic]
            headers = decode_headers([(k, v) for k, v in (m.headers or [])])
            key = f"{pipeline.name}|{ends.tenant_of(headers)}|{m.topic}|{m.partition}"
            current = windowed[key].current()
            if current and m.offset <= current["upto"]:
                continue  # counted before a restart: the start re-reads the tables' day (streams.insights.rewind)
            end = ends.read(pipeline, m.topic, headers, event.value, int(m.timestamp * 1000))
            windowed[key] = windows.fold(current, end, m.offset)

    @app.timer(max(1.0, conf.window_s / 4))
    async def check_alerts() -> None:
        for alert in tables.new_alerts(time.time()):
            log.warning("insights alert", extra={"fields": alert})
            await alerts_topic.send(key=alert["tenant"].encode(), value=json.dumps(alert).encode())

    if topics_now is not None:
        @app.timer(30.0)
        async def new_pipelines() -> None:
            # A pipeline started after this worker: stop, and the supervisor starts it again reading its
            # topics too (the tables restore from their changelogs).
            now = set(await asyncio.get_running_loop().run_in_executor(None, topics_now))
            if not now <= set(topics):
                log.warning("new terminal topics; restarting to read them",
                            extra={"fields": {"topics": sorted(now - set(topics))}})
                os.kill(os.getpid(), signal.SIGTERM)

    @app.page("/insights")
    async def page(web: Any, request: Any) -> Any:
        tenant = request.query.get("tenant") or None
        return web.json(tables.snapshot(time.time(), tenant))

    return app, tables


class Tables:
    """Reads the window table: per pipeline and tenant, the windows merged across partitions."""

    def __init__(self, table: Any, conf: InsightsSettings, topics: Mapping[str, Pipeline], settings: Settings):
        self._table, self._conf, self._settings = table, conf, settings
        self._pipelines = {p.name: p for p in topics.values()}
        self.alerted: set[tuple[str, str, str, int]] = set()
        self.checked_ms = 0
        """When alerts were last looked for: every window closed half a window before it has been judged."""

    def by_window(self) -> dict[tuple[str, str], dict[int, windows.Aggregate]]:
        """``{(pipeline, tenant): {window start ms: aggregate}}``."""
        parts: dict[tuple[str, str], dict[int, list[windows.Aggregate]]] = defaultdict(lambda: defaultdict(list))
        for (key, (start, _end)), agg in list(self._table.data.items()):
            if not agg:
                continue
            pipeline, tenant, *_ = key.split("|")
            parts[(pipeline, tenant)][int(round(start * 1000))].append(agg)
        return {k: {w: windows.merge(a) for w, a in sorted(v.items())} for k, v in parts.items()}

    def report(self, pipeline: str, agg: windows.Aggregate) -> dict[str, Any]:
        p = self._pipelines.get(pipeline)
        every = [(m.offline if self._settings.offline else m.remote)[0] for m in p.models.values()] if p else []
        return windows.report(agg, self._conf.prices, every)

    def snapshot(self, now_s: float, tenant: str | None = None) -> dict[str, Any]:
        """The last hour's windows, and the hour's and day's totals, per pipeline and tenant."""
        now_ms = int(now_s * 1000)
        out: dict[str, Any] = {"window_s": self._conf.window_s, "now_ms": now_ms,
                               "alerts_checked_ms": self.checked_ms, "tenants": []}
        for (pipeline, t), by_start in sorted(self.by_window().items()):
            if tenant is not None and t != tenant:
                continue
            hour = {w: a for w, a in by_start.items() if w >= now_ms - 3_600_000}
            day = {w: a for w, a in by_start.items() if w >= now_ms - DAY_S * 1000}
            out["tenants"].append({
                "pipeline": pipeline, "tenant": t,
                "windows": [{"start_ms": w, **self.report(pipeline, a)} for w, a in hour.items()],
                "hour": self.report(pipeline, windows.merge(hour.values())),
                "day": self.report(pipeline, windows.merge(day.values())),
            })
        return out

    def new_alerts(self, now_s: float) -> list[dict[str, Any]]:
        """Alerts of windows closed since the last look (a window is closed half a window after its end)."""
        size_ms = int(self._conf.window_s * 1000)
        now_ms = int(now_s * 1000)
        policy = self._conf.policy
        fired = []
        for (pipeline, tenant), by_start in self.by_window().items():
            for start in sorted(by_start):
                if start + size_ms + size_ms // 2 > now_ms or start + size_ms < now_ms - ALERT_HORIZON_MS:
                    continue  # open, or too old to be news (a first start over a day of history)
                history = [by_start.get(start - k * size_ms) for k in range(policy.baseline_windows, 0, -1)]
                window = self.report(pipeline, by_start[start])
                past = [self.report(pipeline, h) if h else None for h in history]
                for metric, value, baseline in alerts.check(window, past, policy):
                    mark = (pipeline, tenant, metric, start)
                    if mark in self.alerted:
                        continue
                    self.alerted.add(mark)
                    fired.append({"tenant": tenant, "pipeline": pipeline, "metric": metric,
                                  "window": {"start_ms": start, "end_ms": start + size_ms},
                                  "value": value, "baseline": round(baseline, 6)})
        self.checked_ms = now_ms
        return fired


def fired_before(settings: Settings) -> set[tuple[str, str, str, int]]:
    """The alerts already on ``triage.alerts``: a restarted worker does not raise them again."""
    from streams.kafka_io import read_partition  # noqa: PLC0415 - only the worker needs it
    marks = set()
    for _key, value in read_partition(settings.bootstrap, ALERTS_TOPIC, 0, settle=5.0):
        try:
            a = json.loads(value)
            marks.add((a["pipeline"], a["tenant"], a["metric"], int(a["window"]["start_ms"])))
        except (ValueError, KeyError, TypeError):
            continue
    return marks


def run(settings: Settings, conf: InsightsSettings) -> None:
    """Run the worker until SIGTERM (faust's worker handles signals and stops cleanly)."""
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    from streams import stack  # noqa: PLC0415 - the worker's start only
    from streams.kafka_io import base_config  # noqa: PLC0415
    from streams.insights.rewind import rewind  # noqa: PLC0415
    from streams.services.kafka_broker import TopicSpec, ensure_topics  # noqa: PLC0415
    admin = AdminClient(base_config(settings.bootstrap))

    def topics_now() -> dict[str, Pipeline]:
        return terminal_topics(settings, set(admin.list_topics(timeout=30).topics))

    topics = topics_now()
    if not topics:
        raise SystemExit("no terminal topics on the cluster yet: start a pipeline (`triage up`) first")
    replication = min(3, stack.cluster_size(settings.home))
    # Its own topic, not a pipeline's: created here, where it is written.
    ensure_topics(settings.bootstrap, [TopicSpec(ALERTS_TOPIC, 1, replication, {})])
    rewind(settings.bootstrap, app_id(settings), sorted(topics),
           since_ms=int((time.time() - DAY_S - conf.window_s) * 1000), timeout_s=3 * SESSION_TIMEOUT_S)
    app, tables = build(settings, conf, topics, replication=replication, topics_now=topics_now)
    tables.alerted |= fired_before(settings)
    log.info("insights reading", extra={"fields": {"topics": sorted(topics), "port": conf.port}})
    faust.Worker(app, loglevel="WARNING", redirect_stdouts=False, override_logging=False).execute_from_commandline()
