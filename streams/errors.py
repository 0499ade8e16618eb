"""Every error triage raises on purpose, each with a machine-readable ``code`` and a ``retryable`` flag.

The runtime, not the step, reads these: a retryable error is retried with backoff, then the fallback
chain is tried; anything else becomes a dead-letter record with ``dlq.reason = error.code``.

    TriageError
    ├── InputError                      (never retryable: the bytes themselves are wrong)
    │   ├── MalformedInput              MALFORMED       not JSON / not Avro / empty value / JSON nested past
    │   │                                               the parser / an identifier (tenant, ticket, customer,
    │   │                                               channel, correlation ID) with a control character
    │   ├── EncodingError               ENCODING        text is not UTF-8, or JSON spells a lone surrogate
    │   ├── SchemaInvalid               SCHEMA_INVALID  missing or mistyped fields, blank body
    │   │   └── UnknownSchema           MALFORMED       Confluent schema id we cannot resolve
    │   ├── Oversized                   OVERSIZED       body or record over the configured limit
    │   └── UnknownTenant               UNKNOWN_TENANT  tenant not configured
    ├── ModelError
    │   ├── ModelTimeout                MODEL_TIMEOUT   retryable
    │   ├── ModelRateLimited            MODEL_RATE_LIMITED retryable, carries retry_after
    │   ├── ModelUnavailable            MODEL_UNAVAILABLE 5xx / connection errors, retryable
    │   ├── ModelRejected               MODEL_REJECTED  4xx other than 429, not retryable
    │   └── InvalidModelOutput          INVALID_OUTPUT  unparseable JSON, label outside the set, empty reply
    ├── GuardTripped                    LOOP_CAP / LOOP_REPEAT / BUDGET / TENANT_MISMATCH
    ├── DuplicateTicket                 DUPLICATE       a second ticket with the (tenant, correlation ID, attempt)
    │                                                   of one the join holds or has just finished
    ├── StateError                      STATE_UNAVAILABLE (Redis down), retryable
    ├── PipelineError                   PIPELINE_INVALID a declaration that cannot run (a cycle, an unknown
    │                                                   dependency, a task that cannot be imported...)
    └── Outage                          MODEL_OUTAGE: every model of a chain is away and the policy is to
                                        wait for it (TRIAGE_MODEL_OUTAGE=wait), retryable until the deadline
"""
from __future__ import annotations


class TriageError(Exception):
    """Base of every deliberate triage error."""

    code: str = "INTERNAL"
    retryable: bool = False

    def __init__(self, message: str, *, code: str | None = None, retryable: bool | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable


class InputError(TriageError):
    code = "MALFORMED"


class MalformedInput(InputError):
    code = "MALFORMED"


class EncodingError(InputError):
    code = "ENCODING"


class SchemaInvalid(InputError):
    code = "SCHEMA_INVALID"


class UnknownSchema(MalformedInput):
    """A framed value whose schema id no registry knows: to the user, malformed input."""

    code = "MALFORMED"


class Oversized(InputError):
    code = "OVERSIZED"


class UnknownTenant(InputError):
    code = "UNKNOWN_TENANT"


class ModelError(TriageError):
    code = "MODEL_ERROR"


class ModelTimeout(ModelError):
    code = "MODEL_TIMEOUT"
    retryable = True


class ModelRateLimited(ModelError):
    code = "MODEL_RATE_LIMITED"
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelUnavailable(ModelError):
    code = "MODEL_UNAVAILABLE"
    retryable = True


class ModelRejected(ModelError):
    code = "MODEL_REJECTED"


class InvalidModelOutput(ModelError):
    """The model answered, but not with something we may pass on. Retried: sampling may fix it."""

    code = "INVALID_OUTPUT"
    retryable = True


class GuardTripped(TriageError):
    """A guard stopped the work on purpose; the ticket goes to a human with this code."""

    code = "GUARD"


class DuplicateTicket(TriageError):
    """A ticket whose (tenant, correlation ID, attempt) another ticket already holds at the join (in flight, or
    finished within the join's retention). Merging the two would give one ticket the other's labels and leave
    one of them without an outcome; dropping it would leave it without one silently. It is dead-lettered, and
    the message names the record that holds the ID."""

    code = "DUPLICATE"


class StateError(TriageError):
    code = "STATE_UNAVAILABLE"
    retryable = True


class Outage(TriageError):
    """Every model of a chain is unreachable and the configured policy is to wait (catch up) rather than
    degrade or dead-letter: the runtime retries the record with backoff until the step deadline."""

    code = "MODEL_OUTAGE"
    retryable = True


OUTAGE_CODES = ("MODEL_TIMEOUT", "MODEL_UNAVAILABLE", "MODEL_RATE_LIMITED")


class PipelineError(TriageError):
    """A pipeline declaration that cannot run; the message names every problem found, before anything runs."""

    code = "PIPELINE_INVALID"
