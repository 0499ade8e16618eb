"""Local services triage starts itself: a KRaft Kafka broker and a Redis server, all on loopback.

Everything they write lives under one ``home`` folder (e.g. ``<repo>/.triage``)::

    home/run/<name>.pid      pid files written by :mod:`streams.services.proc`
    home/logs/<name>.log     stdout+stderr of each service
    home/kafka/libs          broker jars resolved by Maven from deploy/kafka/pom.xml
    home/kafka/node-<id>/    server.properties and the broker's log.dirs
    home/redis/              redis.conf and the append-only file

Modules: ``proc`` (process helpers), ``kafka_broker`` and ``redis_server``. They are not
imported here so that ``import streams.services`` stays free of confluent_kafka and redis.
"""
from __future__ import annotations


class ServiceError(RuntimeError):
    """A local service could not be installed, started or used.

    The message says what failed and, when a process was involved, ends with the tail of its log,
    so printing it is enough for the user to act on.
    """


__all__ = ["ServiceError"]
