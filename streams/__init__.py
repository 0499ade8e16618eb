"""triage's streaming runtime: Kafka, Avro, dead letters, the join, services and the CLI.

Steps (in ``processors``) never import from the Kafka-facing modules here; they see only
``streams.errors``, ``streams.context`` and the records they are handed.
"""
