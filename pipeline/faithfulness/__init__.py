"""Can the maps be trusted? Faithfulness of every map and a sanity check of the explainer (issue 18).

- :mod:`.confidence`: average drop and increase in confidence (Grad-CAM++ paper, section 5.1), one extra
  forward per distinct map, on every image;
- :mod:`.causal`: deletion and insertion AUC (RISE, Petsiuk et al. 2018), on a deterministic sample;
- :mod:`.sample`: which images are in a sample (a hash of the id: resume-safe);
- :mod:`.similarity`: Spearman rank correlation and SSIM of maps, batched;
- :mod:`.randomisation`: the stages of the cascading model-parameter randomisation (Adebayo et al. 2018);
- :mod:`.sanity`: the explainer's sanity check at the end of a run (randomisation and class sensitivity);
- :mod:`.columns`: the per-batch columns :func:`pipeline.compute.audit_batch` adds (one call);
- :mod:`.summary`: the ``faithfulness`` and ``sanity_check`` entries of ``summary.json`` and their lines.

Every protocol choice is stated in ``docs/definitions.md`` ("Faithfulness" and "Sanity check") and in the
report metadata (:func:`.summary.definition_entries`).
"""
