"""Training: models, tasks, gradient estimators, the trainer and its records.

Importing this package registers the issue-7 additions beside the built-in
names: the ``mgd`` and ``pat`` estimators, the ``transformer`` model and the
``seq-digits`` and ``parity`` tasks.
"""

from labpgt.training import sequence_tasks, transformer
from labpgt.training.estimators import mgd, pat

for _module in (mgd, pat, transformer, sequence_tasks):
    _module.register()
