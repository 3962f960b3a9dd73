"""The EnNAS method: ensemble teacher (exact solver, ECOS reference), distillation, diversity and its sampler.

Importing this package registers `ennas` and `ennas-wo-ds` in `ennas.core.method.METHODS`.
"""

from ennas.method import ennas  # noqa: F401
