"""Spans: what a run of the pipeline reads from the runs of earlier spans.

A run with ``spans: N`` ingests span S and reads the Examples of spans S-N+1..S
(:func:`span_window`, TFX's ``static_range`` resolver function); it starts from the
analyzer cache and the blessed model of the latest run that read only earlier spans
(:class:`LatestBeforeSpanStrategy`): TFX's stock latest-artefact strategies would hand a
re-run of span S its own outputs, and Transform and the Trainer would run again.
"""

from __future__ import annotations

from tfx import v1 as tfx
from tfx.components.evaluator import constants as evaluator_constants
from tfx.dsl.input_resolution import canned_resolver_functions
from tfx.types import standard_artifacts


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
    channel = tfx.dsl.Channel(type=standard_artifacts.Examples, producer_component_id=producer_id, output_key=output_key)
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
        e.artifact_id for e in store.get_events_by_execution_ids(list(executions))
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
