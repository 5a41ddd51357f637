"""The training engine (``dataprep train``): layers, and in time the recipe, net, solver,
loader, runner and snapshots, one module each; NumPy or CuPy through the same code."""
