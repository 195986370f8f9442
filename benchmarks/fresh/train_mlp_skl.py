"""Training: scikit-learn's MLPClassifier, partial_fit over generated batches."""
import sys
import time

import numpy as np
from sklearn.neural_network import MLPClassifier

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 40
rng = np.random.default_rng(2)
clf = MLPClassifier(hidden_layer_sizes=(128, 64))
end = time.monotonic() + seconds
while time.monotonic() < end:
    X = rng.normal(size=(1000, 64))
    y = (np.sin(X[:, 0]) + X[:, 1] > 0).astype(int)
    clf.partial_fit(X, y, classes=[0, 1])
