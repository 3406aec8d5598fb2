"""The umbrella `lumos` command: gathers the sub-commands of the project's layers.

The outermost layer: it may import every package, and none imports it.
"""
