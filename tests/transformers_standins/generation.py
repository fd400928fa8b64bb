"""Stand-in for transformers' tests/generation/test_utils.py, which the sdist lacks.

ModelTesterMixin imports `GenerationTesterMixin` only to check that a tester inherits it exactly when its model
can `generate()`. Image classifiers cannot, so no tester inherits this, and it needs no tests of its own.
"""


class GenerationTesterMixin:
    """Marks testers of models that can generate (none here)."""
