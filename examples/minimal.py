"""Train a network with the ring in it, then load it and classify: the whole API in use."""

import labpgt

result = labpgt.train("dense", "iris", method="boundary", reservoir="sim", epochs=1, seed=0)
print(f"test accuracy {result.accuracy:.4f} (run directory {result.out_dir})")
model = labpgt.load(result.out_dir)
print(model.classify([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]))
