"""The test suite, in folders by layer: kernels, ops, models, pretext, tasks, data, eval, training, benchmarks."""
