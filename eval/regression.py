"""The regression baseline lives in :mod:`training.regression`; this name re-exports it."""

from training.regression import *  # noqa: F401,F403
from training.regression import REGRESSION_MARKER, RegressionConfig, RegressionPolicy, run_train_regression  # noqa: F401
