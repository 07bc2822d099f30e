"""cam-audit: Grad-CAM maps of an image classifier scored against the annotated boxes.

Importing the package registers the structured-config schemas of the config groups in Hydra's
ConfigStore (:mod:`pipeline.settings`): every entry point (the command line, ``run_audit`` callers that
compose with ``hydra.compose``, the scripts) imports it before Hydra composes ``conf/``.
"""

from pipeline.settings import register_schemas

register_schemas()
