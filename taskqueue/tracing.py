"""Optional OpenTelemetry tracing (SPEC §12): an enqueue made inside a valid span carries that span's context
in the envelope (`trace`, a W3C traceparent), and the worker runs the task in a span that continues it.

Nothing here imports opentelemetry unless it is there and in use:

- A producer looks for a current span only when its process has already imported `opentelemetry.trace` (code
  that creates spans has): otherwise there can be no span, and nothing is imported, added or called beyond one
  dictionary look-up per enqueue call (a bulk enqueue is one call). (redis-py 8 imports opentelemetry itself
  when it is installed; then each enqueue call also asks for the current span.)
- A worker opens a span only for a message that carries `trace`, importing opentelemetry at the first such
  message; a message without one (redis-cli, a schedule, a producer outside any span) runs exactly as it would
  without opentelemetry: the worker never starts traces of its own. Without the package the context is
  ignored. The spans go to the worker process's tracer provider: set one up where the worker imports your
  tasks (README, "Tracing"); without one, OpenTelemetry's default drops them.

Client-safe: the standard library only, until a span is at hand.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

TRACE_MODULE = "opentelemetry.trace"
MAX_TRACEPARENT = 128  # characters of `trace` (a version-00 traceparent has 55; later versions may add fields)
TRACER_NAME = "taskqueue"

_api: Any = None  # the worker's opentelemetry modules once imported; False when they cannot be


def traceparent() -> str | None:
    """The W3C traceparent of the current span, or None: no opentelemetry in use here, or no valid span."""
    trace = sys.modules.get(TRACE_MODULE)
    if trace is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _opentelemetry() -> Any:
    """(trace, propagator, tracer) on first use; False when opentelemetry-api is not importable."""
    global _api  # noqa: PLW0603 - imported once per process, on the first traced task
    if _api is None:
        try:
            from opentelemetry import trace
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError:
            _api = False
        else:
            _api = (trace, TraceContextTextMapPropagator(), trace.get_tracer(TRACER_NAME))
    return _api


@contextlib.contextmanager
def task_span(parent: str, task_id: str, task: str, queue: str, attempt: int) -> Iterator[Any]:
    """The span of one attempt, current while it runs (so the task's own spans and enqueues are its children),
    continuing the trace of `parent` (a message's `trace`). Yields the span, or None without opentelemetry."""
    api = _opentelemetry()
    if not api:
        yield None
        return
    trace, propagator, tracer = api
    attributes = {
        "messaging.system": "taskqueue",
        "messaging.operation.type": "process",
        "messaging.destination.name": queue,
        "messaging.message.id": task_id,
        "taskqueue.task.id": task_id,
        "taskqueue.task.name": task,
        "taskqueue.queue": queue,
        "taskqueue.attempt": attempt,
    }
    with tracer.start_as_current_span(
        f"run {task}",
        context=propagator.extract({"traceparent": parent}),  # an unreadable one starts a new trace
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException:  # told to stop (shutdown): the message goes back to its queue
            span.set_attribute("taskqueue.outcome", "handed back")
            raise


def settled(span: Any, failure: BaseException | None, error: str = "") -> None:
    """Record an attempt's outcome on its span: nothing more on success; the error (status and event) on failure."""
    if span is None:
        return
    if failure is None:
        span.set_attribute("taskqueue.outcome", "succeeded")
        return
    trace = _api[0]
    span.set_attribute("taskqueue.outcome", "failed")
    span.record_exception(failure)
    span.set_status(trace.Status(trace.StatusCode.ERROR, error or f"{type(failure).__name__}: {failure}"))
