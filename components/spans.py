"""Spans, in one place: how an input pattern names them, which span a run reads, and what a
run of the pipeline reads from the runs of earlier spans.

An input pattern with TFX's ``{SPAN}`` (or ``{YYYY}{MM}{DD}``, optionally ``{VERSION}``) spec,
e.g. ``span-{SPAN}/*``, reads one span per run: the latest, or the one given
(:func:`static_span`), resolved as FileBasedExampleGen's driver does (:func:`resolve_span`);
the CLI takes a span as a number or a date (:func:`parse_span`).

A run with ``spans: N`` ingests span S and reads the Examples of spans S-N+1..S
(:func:`span_window`, TFX's ``static_range`` resolver function); it starts from the
analyzer cache and the blessed model of the latest run that read only earlier spans
(:class:`LatestBeforeSpanStrategy`): TFX's stock latest-artefact strategies would hand a
re-run of span S its own outputs, and Transform and the Trainer would run again.
"""

from __future__ import annotations

import datetime

from tfx import v1 as tfx
from tfx.components.evaluator import constants as evaluator_constants
from tfx.components.example_gen import input_processor
from tfx.components.example_gen import utils as example_gen_utils
from tfx.dsl.input_resolution import canned_resolver_functions
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.types import standard_artifacts

# TFX's span specs in an input pattern (tfx.components.example_gen.utils); a {SPAN:n} width
# is allowed too.
SPAN_SPEC = "{SPAN"
DATE_SPECS = ("{YYYY}", "{MM}", "{DD}")
VERSION_SPEC = "{VERSION"


def names_spans(pattern: str) -> bool:
    """Whether ``pattern`` names spans: a ``{SPAN}`` spec or the whole ``{YYYY}{MM}{DD}``."""
    return SPAN_SPEC in pattern or all(spec in pattern for spec in DATE_SPECS)


def has_span_spec(input_config: example_gen_pb2.Input) -> bool:
    """Whether any split pattern of ``input_config`` has a span, date or version spec."""
    return any(any(spec in s.pattern for spec in (SPAN_SPEC, DATE_SPECS[0], VERSION_SPEC)) for s in input_config.splits)


def parse_span(text: str) -> int:
    """A span as the CLI takes it: a number (``12``), or a date (``2024-05-02``) for dated
    patterns, which TFX numbers by days since 1970-01-01. ValueError (one line) otherwise."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        day = datetime.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"span {text!r} is neither a number nor a date (YYYY-MM-DD)") from None
    return example_gen_utils.date_to_span_number(day.year, day.month, day.day)


def static_span(span: int) -> range_config_pb2.RangeConfig:
    """The range_config that makes an ExampleGen read span ``span`` (not the latest)."""
    return range_config_pb2.RangeConfig(
        static_range=range_config_pb2.StaticRange(start_span_number=span, end_span_number=span)
    )


def resolve_span(
    input_base: str, input_config: example_gen_pb2.Input, range_config: range_config_pb2.RangeConfig | None = None
) -> tuple[int, int | None, example_gen_pb2.Input]:
    """(span, version, input config with the span filled in), as FileBasedExampleGen's
    driver resolves them: the latest span under ``input_base``, or the one ``range_config``
    names. A pattern without span spec gives span 0 and the config unchanged.

    Raises
    ------
    ValueError
        No files match the pattern (for that span).
    """
    processor = input_processor.FileBasedInputProcessor(input_base, input_config.splits, range_config)
    span, version = processor.resolve_span_and_version()
    resolved = example_gen_pb2.Input()
    resolved.CopyFrom(input_config)
    for split in resolved.splits:
        split.pattern = processor.get_pattern_for_span_version(split.pattern, span, version)
    return span, version, resolved


def span_to_read(input_base: str, pattern: str, span: int | None = None) -> int:
    """The span a run reads from ``input_base``: ``span`` if given (its files must exist),
    else the latest. ValueError (one line) when no files match."""
    input_config = example_gen_utils.make_default_input_config(pattern)
    try:
        found, _, _ = resolve_span(input_base, input_config, static_span(span) if span is not None else None)
    except ValueError as exc:
        which = f"span {span}" if span is not None else "any span"
        raise ValueError(f"no files of {which} match {pattern!r} under {input_base}: {exc}") from exc
    return found


def latest_blessed_model(span: int | None = None) -> tfx.dsl.Resolver:
    """The Evaluator's baseline (and, with spans, the Trainer's starting point): TFX's
    latest blessed model, or with ``span`` the latest blessed model trained on earlier
    spans (:class:`LatestBeforeSpanStrategy`)."""
    channels = dict(
        model=tfx.dsl.Channel(type=standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=standard_artifacts.ModelBlessing),
    )
    if span is None:
        return tfx.dsl.Resolver(strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy, **channels).with_id(
            "LatestBlessedModel"
        )
    return tfx.dsl.Resolver(
        strategy_class=LatestBeforeSpanStrategy, config={"span": span, "blessed": True}, **channels
    ).with_id("LatestBlessedModel")


def span_window(producer_id: str, output_key: str, first: int, last: int):
    """The Examples of spans ``first..last`` (those that exist, at least one) that node
    ``producer_id`` made in any run of this pipeline: TFX's ``static_range`` resolver
    function, which keeps the latest version of each span (a span re-ingested after a code
    change counts once). It reads the Examples' ``span`` property, which FitsExampleGen
    and the PpxfLabeler set (TFX 1.16's ExampleGen driver sets only the custom property
    that ``SpanRangeStrategy`` reads; that strategy keeps every version of a span)."""
    channel = tfx.dsl.Channel(
        type=standard_artifacts.Examples, producer_component_id=producer_id, output_key=output_key
    )
    return canned_resolver_functions.static_range(
        channel, start_span_number=max(0, first), end_span_number=last, min_spans=1
    )


def latest_analyzer_cache(span: int) -> tfx.dsl.Resolver:
    """The analyzer cache of the latest Transform that read only spans before ``span``."""
    return tfx.dsl.Resolver(
        strategy_class=LatestBeforeSpanStrategy,
        config={"span": span},
        cache=tfx.dsl.Channel(type=standard_artifacts.TransformCache),
    ).with_id("LatestAnalyzerCache")


def trained_span(store, artifact) -> int | None:
    """The newest span among the ``examples`` inputs of the execution(s) that output
    ``artifact`` (a Transform's cache, a Trainer's model); None if they read no Examples.
    Examples without a span count as span 0."""
    from ml_metadata.proto import metadata_store_pb2

    outputs = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
    executions = {e.execution_id for e in store.get_events_by_artifact_ids([artifact.id]) if e.type in outputs}
    inputs = [
        e.artifact_id
        for e in store.get_events_by_execution_ids(list(executions))
        if e.type == metadata_store_pb2.Event.INPUT and e.path.steps and e.path.steps[0].key == "examples"
    ]
    spans = []
    for example in store.get_artifacts_by_id(inputs):
        if "span" in example.custom_properties:
            value = example.custom_properties["span"]
            spans.append(int(value.int_value or value.string_value or 0))
        else:
            spans.append(example.properties["span"].int_value if "span" in example.properties else 0)
    return max(spans) if spans else None


class LatestBeforeSpanStrategy(tfx.dsl.experimental.ResolverStrategy):
    """The latest artefact made from spans before ``span`` only; with ``blessed``, the
    latest blessed Model so made, with its ModelBlessing (the inputs ``model`` and
    ``model_blessing``, as ``LatestBlessedModelStrategy``'s).

    Why not TFX's ``LatestArtifactStrategy`` / ``LatestBlessedModelStrategy``: a re-run of
    span S would resolve what S's own first run made (its analyzer cache, its model once
    blessed), so Transform and the Trainer would get new inputs and run again, a new model
    at every re-run. What the runs of earlier spans made does not change: every run of
    span S resolves the same artefacts and TFX's cache holds.
    """

    def __init__(self, span: int, blessed: bool = False):
        self._span = span
        self._blessed = blessed

    def resolve_artifacts(self, store, input_dict):
        if not self._blessed:
            return {key: self._latest(store, artifacts)[:1] for key, artifacts in input_dict.items()}
        blessings = {
            b.get_int_custom_property(evaluator_constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY): b
            for b in input_dict["model_blessing"]
            if b.get_int_custom_property(evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY) == 1
        }
        models = self._latest(store, [m for m in input_dict["model"] if m.id in blessings])[:1]
        return {"model": models, "model_blessing": [blessings[m.id] for m in models]}

    def _latest(self, store, artifacts) -> list:
        """``artifacts`` made from spans before ``span``, the newest first."""
        before = []
        for artifact in artifacts:
            made_from = trained_span(store, artifact)
            if made_from is not None and made_from < self._span:
                before.append(artifact)
        return sorted(before, key=lambda a: a.id, reverse=True)
