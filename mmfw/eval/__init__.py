"""mmfw runs in the lmms-eval harness: the model class (:mod:`mmfw.eval.lmms_model`, registered through
lmms-eval's ``lmms_eval.models`` entry point), the local tasks shipped in ``mmfw/eval/tasks/``, the converter that
writes an eval set as a Hugging Face ``datasets`` folder (:mod:`mmfw.eval.hf_dataset`) and the runner behind
``mmfw eval`` (:mod:`mmfw.eval.harness`).

lmms-eval is an optional dependency (``pip install -e ".[eval]"``); nothing in this package imports it at module
level except :mod:`mmfw.eval.lmms_model`, which lmms-eval imports only when the ``mmfw`` model is requested.
"""
