"""Attacks as small functions ``attack(model, inputs, labels, *, ...) -> adversarial inputs``.

- ``common``: ``frozen_for_attack`` and the objectives (LL, DLR, CE) with their sign convention;
- ``fmn``: ``fmn_linf``, FMN (Linf) in the HO-FMN variant, as small pure steps;
- ``hofmn``: ``tune_fmn`` (Optuna: Sobol start + GP sampler) and ``hofmn_attack``;
- ``autoattack``: ``autoattack_linf`` over the official AutoAttack code (``pyautoattack`` or git ``autoattack``);
- ``verify``: ``linf_distances``, ``robust_within``, ``within_eps``: verified per-sample results.

Nothing is imported here, so that ``import evaluator.attacks.verify`` stays cheap.
"""
