"""Hand an audit to the tools reviewers already use.

- :mod:`pipeline.export.label_quality`: hardness and mistakenness as FiftyOne's brain defines them for
  classification, computed by the run from the logits (``samples.parquet`` columns ``hardness``,
  ``mistakenness``);
- :mod:`pipeline.export.heatmaps`, :mod:`pipeline.export.boxes`, :mod:`pipeline.export.samples`: a run's rows,
  maps and boxes as plain per-sample records (no FiftyOne needed);
- :mod:`pipeline.export.to_fiftyone`: those records as a FiftyOne dataset (``cam-audit export fiftyone RUN``,
  the optional extra ``.[fiftyone]``).
"""
