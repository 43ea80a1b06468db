"""Small, dependency-free runnables and a legacy Service used by `examples/*.yaml`.

They ship in the runner image so that the example RunnerServices run as they are on a real
cluster. The "models" are deliberately tiny (word lists, hashing) so the image needs no weights.
"""
