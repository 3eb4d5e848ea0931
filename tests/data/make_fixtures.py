# Regenerates the NumPy fixtures the data module's unit tests read (src/data/tests.rs).
# Run from this directory: python3 make_fixtures.py  (numpy 2.x).
import numpy as np

x = np.arange(12, dtype=np.float64).reshape(4, 3) / 11.0   # Unit[3], 4 examples
y = np.array([0, 2, 1, 2], dtype=np.int64)                # Cat(3)
x_test = np.array([[0.5, 0.25, 1.0], [0.0, 0.0, 0.0]])
y_test = np.array([1, 0], dtype=np.int64)
np.savez_compressed("savez_compressed.npz", x=x, y=y, x_test=x_test, y_test=y_test)

# Column-major storage: the reader must reorder to row-major.
np.save("fortran_f8.npy", np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)))
# Big-endian int32.
np.save("bigendian_i4.npy", np.arange(6, dtype=">i4").reshape(3, 2))
