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
"""

from __future__ import annotations

import argparse
import dataclasses

from tfx import v1 as tfx

from stellarpop.pipeline import configs
from stellarpop.pipeline.pipeline import create_pipeline, write_schema


def compile_pipeline(cfg: configs.PipelineConfig, project: str, region: str, bucket: str, image: str, output: str) -> str:
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
    return output


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--project", required=True)
    ap.add_argument("--region", default="us-central1")
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--output", default="stellarpop_kfp.json")
    a = ap.parse_args()
    print(compile_pipeline(configs.PipelineConfig.from_yaml(a.config), a.project, a.region, a.bucket, a.image, a.output))


if __name__ == "__main__":
    main()
