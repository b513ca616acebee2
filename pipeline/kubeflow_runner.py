"""Compile the same pipeline for Kubeflow Pipelines (V2 spec JSON), Beam on Dataflow.

    python -m stellarpop.pipeline.kubeflow_runner --config cfg.yaml --project P --region R \
        --bucket gs://B --image gcr.io/P/stellarpop:1.0 --output stellarpop_kfp.json

The image must have this distribution installed (``pip install .`` with requirements.lock);
Dataflow workers install it from ``setup.py`` (``--setup_file``).

Caching follows the config's ``enable_cache`` (each task's ``cachingOptions``): Kubeflow
reuses a task whose image, arguments and inputs are unchanged. Compile from the checkout
the image was built from: Transform's and Trainer's code fingerprints are arguments, but
the other components' (``pipeline.stamp``) reach Kubeflow only through execution properties,
so tag a new image for new code. A Trainer task retried after a failure resumes from
``<bucket>/<name>/trainer_checkpoints``.

Streaming (``spans`` in the config): each run's ExampleGen reads the latest span under
``input_base`` (FileBasedExampleGen's driver, run by Vertex before the task), and with
``schedule`` (a cron, e.g. ``"0 2 * * *"``) a Vertex AI Pipelines schedule is written beside
the spec (``<output>.schedule.json``, the body of the ``schedules.create`` REST call: one run
at a time, queued). TFX 1.16's Kubeflow V2 compiler compiles only the
``LatestArtifactStrategy`` and ``LatestBlessedModelStrategy`` resolvers (and no resolver
functions), so on Kubeflow the Trainer starts from the latest blessed model but Transform
and the Trainer read the new span only: the rolling window and the analyzer cache are the
local runner's (``pipeline.create_pipeline``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

from tfx import v1 as tfx

from stellarpop.pipeline import configs
from stellarpop.pipeline.pipeline import create_pipeline, write_schema


def compile_pipeline(
    cfg: configs.PipelineConfig, project: str, region: str, bucket: str, image: str, output: str
) -> str:
    """Write the Kubeflow V2 pipeline spec of ``cfg`` (root under ``bucket``) to ``output``,
    and the raw-data schema under the root (the one file the tasks read that is not an
    artefact: ``ImportSchemaGen``'s input)."""
    root = f"{bucket.rstrip('/')}/{cfg.name}"
    cfg = dataclasses.replace(cfg, root=root, serving_dir=cfg.serving_dir or f"{root}/serving/{cfg.name}")
    beam_args = configs.dataflow_beam_args(project, region, f"{root}/tmp")
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_filename=output,
    )
    schema = write_schema(root, cfg.label_source)  # uploaded here, where the tasks read it
    runner.run(create_pipeline(cfg, schema, beam_pipeline_args=beam_args), write_out=True)
    if cfg.schedule:
        write_schedule(cfg, output, project, region)
    return output


def schedule_path(output: str) -> str:
    """Where :func:`compile_pipeline` writes the schedule of the spec ``output``."""
    return os.path.splitext(output)[0] + ".schedule.json"


def write_schedule(cfg: configs.PipelineConfig, output: str, project: str, region: str) -> str:
    """A Vertex AI Pipelines schedule running the compiled job ``output`` at ``cfg.schedule``
    (cron, UTC unless it starts with ``TZ=<zone>``), one run at a time, later ones queued:
    each run's window and warm start read what the previous run left. The JSON is the body
    of ``POST https://{region}-aiplatform.googleapis.com/v1/projects/{project}/locations/{region}/schedules``.
    """
    with open(output) as fh:
        job = json.load(fh)
    schedule = {
        "displayName": f"{cfg.name}-schedule",
        "cron": cfg.schedule,
        "maxConcurrentRunCount": 1,
        "allowQueueing": True,
        "createPipelineJobRequest": {"parent": f"projects/{project}/locations/{region}", "pipelineJob": job},
    }
    path = schedule_path(output)
    with open(path, "w") as fh:
        json.dump(schedule, fh, indent=2, sort_keys=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--project", required=True)
    ap.add_argument("--region", default="us-central1")
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--output", default="stellarpop_kfp.json")
    a = ap.parse_args()
    cfg = configs.PipelineConfig.from_yaml(a.config)
    print(compile_pipeline(cfg, a.project, a.region, a.bucket, a.image, a.output))
    if cfg.schedule:
        print(schedule_path(a.output))


if __name__ == "__main__":
    main()
