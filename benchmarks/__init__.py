"""Speed of MetaCRM's main paths against hand-written SQLAlchemy code.

Run ``python -m benchmarks --help`` for the options; README.md in this folder
describes what each benchmark compares.
"""
