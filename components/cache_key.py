"""The one execution property that carries a component's code into TFX's cache key.

TFX reuses a component's earlier outputs when its cache key (pipeline, component id,
executor spec, inputs, execution properties) is unchanged; module code named by a dotted path
and files named by a path are not in it. ``stellarpop.pipeline.fingerprint.stamp`` puts a
fingerprint of them in :data:`CODE_FINGERPRINT`, which every custom component declares with
:data:`PARAMETER` and no executor reads (Transform and the Trainer receive it in their
``custom_config``, which they leave alone).
"""

from __future__ import annotations

from tfx.types.component_spec import ExecutionParameter

CODE_FINGERPRINT = "code_fingerprint"
PARAMETER = {CODE_FINGERPRINT: ExecutionParameter(type=str, optional=True)}
