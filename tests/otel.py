"""OpenTelemetry's SDK for the tracing tests: one global tracer provider per test process (OpenTelemetry allows
one), its finished spans kept in memory."""

from __future__ import annotations

import functools

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@functools.cache
def exporter() -> InMemorySpanExporter:
    """The process's in-memory exporter (spans are exported as they end); `.clear()` it before use."""
    found = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(found))
    trace.set_tracer_provider(provider)
    return found


def tracer() -> trace.Tracer:
    exporter()
    return trace.get_tracer("tests")
