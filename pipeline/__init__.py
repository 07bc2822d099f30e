"""cam-audit: Grad-CAM maps of an image classifier scored against the annotated boxes.

Importing the package imports nothing else: a stage's module (``pipeline.data.records``, ``pipeline.scores``,
``pipeline.maps``) brings only what it uses itself (no Hydra, no pandas). The structured-config schemas of the
config groups are stored in Hydra's ConfigStore by :func:`pipeline.settings.register_schemas`, which every
caller that composes ``conf/`` calls first: :mod:`pipeline.hydra_app` when imported (so ``cam-audit``,
``python -m pipeline`` and a launcher's job process), the scripts and the tests before their ``hydra.compose``.
"""
