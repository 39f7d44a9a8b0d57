"""Attacks as small functions ``attack(model, inputs, labels, *, ...) -> adversarial inputs``.

- ``common``: ``frozen_for_attack`` and the objectives (LL, DLR, CE) with their sign convention;
- ``fmn``: ``fmn``, FMN (Linf or L2: a norm's ``p``) in the HO-FMN variant, as small pure steps;
- ``hofmn``: ``tune_fmn`` (Optuna: Sobol start + GP sampler) and ``hofmn_attack``;
- ``autoattack``: ``autoattack`` over the official AutoAttack code (``pyautoattack`` or git ``autoattack``);
- ``verify``: ``verified_distances``, ``robust_within``, ``within_eps``: verified per-sample results.

Each attack and check takes the threat model's norm (``evaluator.registry.norms``).

Nothing is imported here, so that ``import evaluator.attacks.verify`` stays cheap.
"""
