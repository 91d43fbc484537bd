"""The range test itself: plain PyTorch and numpy, no Hydra, MLflow or matplotlib.

``settings`` holds the test's defaults and rules (standard library only), ``rangetest`` runs the
loop and restores state, ``curve`` reads the losses, ``schedules`` makes the LRs, ``suggest``
turns a curve into a learning rate and a confidence verdict, ``training_schedules`` reads the
bounds of one-cycle and cyclical LR schedules from it, ``verify`` picks among candidates by short
probe trainings, ``result`` holds the outcome and its files, ``curve_file`` reads a curve file
from anywhere strictly, ``interrupts`` holds Ctrl-C and stop signals while a curve point is
recorded.
"""
