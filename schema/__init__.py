"""The schema layer: what every stage must agree on, importing nothing of the project.

- :mod:`.features`: every feature and label key, units, the model grid, bins, splits;
- :mod:`.preparation`: how a native spectrum becomes a network input (the settings ingest,
  the simulator, training and prediction share);
- :mod:`.config_codec`: the one JSON codec of the typed configs;
- :mod:`.model_contract`: the exported model's contract with its clients (signature names,
  the model-info and warmup files, the numbered version folders).

Imports run one way: schema, then components, transforms, pipeline, serving, and the command
line on top (``tests/test_import_layers.py``).
"""
