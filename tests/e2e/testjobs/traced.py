"""Tasks of tests/e2e/test_tracing.py. Importing this module — the worker does, at start — sets up
OpenTelemetry's SDK in the worker process, as a user does in a module their tasks import: every finished
span is exported at once, as one JSON line, to the file TEST_SPANS_FILE names."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import taskqueue


class JsonLines(SpanExporter):
    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a", encoding="utf-8") as out:
            for span in spans:
                context, parent = span.get_span_context(), span.parent
                assert context is not None  # a finished SDK span has one
                line = {
                    "name": span.name,
                    "kind": span.kind.name,
                    "trace_id": f"{context.trace_id:032x}",
                    "span_id": f"{context.span_id:016x}",
                    "parent_id": f"{parent.span_id:016x}" if parent else None,
                    "attributes": dict(span.attributes or {}),
                    "status": span.status.status_code.name,
                    "pid": os.getpid(),
                }
                out.write(json.dumps(line) + "\n")
        return SpanExportResult.SUCCESS


if os.environ.get("TEST_SPANS_FILE"):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLines(os.environ["TEST_SPANS_FILE"])))
    trace.set_tracer_provider(provider)


def _where() -> dict[str, Any]:
    """The span this task body runs in (a sync task runs on a thread: the context travels with it)."""
    context = trace.get_current_span().get_span_context()
    return {
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "attempt": taskqueue.current_task().attempt,
    }


def traced(n: int) -> dict[str, Any]:
    return {"n": n, **_where()}


async def atraced(n: int) -> dict[str, Any]:
    return {"n": n, **_where()}


def traced_retry(n: int) -> dict[str, Any]:
    """Asks for a retry on its first attempt, then answers like traced()."""
    if taskqueue.current_task().attempt == 1:
        raise taskqueue.Retry(delay=0.05)
    return {"n": n, **_where()}
