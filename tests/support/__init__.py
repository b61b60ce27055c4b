"""Helpers shared by the test suite: the tolerance table (``tolerances``), NaN-poisoned allocations
(``nan_poison``), device skip markers (``devices``), on-disk dataset fixtures (``data_fixtures``) and
released-checkpoint naming (``checkpoints``)."""
