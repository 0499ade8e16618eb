"""A dead letter fits a record whatever the input carried: the producer refuses one over message.max.bytes,
and the transaction carrying it would be aborted and replayed for good. Without Kafka."""
from __future__ import annotations

from streams.dead_letter import MAX_VALUE_BYTES, dead_letter_headers, dead_letter_id, fit_value
from streams.records import Record

PRODUCER_LIMIT = 8 * 1024 * 1024


def test_many_headers_a_huge_key_and_a_huge_value_still_make_a_record_that_fits() -> None:
    headers = {f"h{i}": "v" * 1000 for i in range(9000)}  # 9 MB of headers, each small
    headers.update({"traceparent": "0" * 2_000_000, "correlation_id": "c" * 1_000_000})
    record = Record("tickets.in", 2, 41, "k" * 1_000_000, b"x" * (9 * 1024 * 1024), headers, 0)
    out = dead_letter_headers(record, "ingest", "OVERSIZED", "too big", 1)
    key = dead_letter_id(record)
    out["correlation_id"] = key
    value = fit_value(record.raw, out)
    size = len(key) + len(value or b"") + sum(len(k) + len(v) for k, v in out.items())
    assert size < PRODUCER_LIMIT
    assert len(value or b"") == MAX_VALUE_BYTES and out["dlq.truncated_from"] == str(9 * 1024 * 1024)
    assert len(key) == 36  # the record's stable source ID, not a megabyte key
    assert "traceparent" not in out and out["dlq.dropped_headers"] and out["attempt"] == "1"
