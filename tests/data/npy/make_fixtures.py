#!/usr/bin/python3
"""(Re)creates the .npy fixtures that tests/test_npy.c reads.

Run with a Python that has numpy (Debian's /usr/bin/python3 with
python3-numpy; the files committed here came from numpy 1.24):

    /usr/bin/python3 tests/data/npy/make_fixtures.py

The values are chosen to be exactly representable and to hit the edges
(extreme integers, -0.0, inf, nan, subnormals), so the C test compares them
with ==. Files losskit must refuse but that only numpy writes naturally
(big-endian, Fortran order, float16, complex, objects, structured) are here
too; hand-made malformed files are written by the test itself.
"""
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def save(name, a, version=None):
    path = os.path.join(HERE, name)
    with open(path, "wb") as f:
        if version is None:
            np.save(f, a, allow_pickle=(a.dtype == object))
        else:
            np.lib.format.write_array(f, a, version=version)


def main():
    # Accepted files, one per dtype.
    save("f32_2x3.npy", np.array([[0.5, -1.25, 3.0], [0.1, 1e-3, -7.0]], dtype="<f4"))
    save("f64_6.npy", np.array([1.0, -0.0, np.inf, np.nan, 1e300, 5e-324], dtype="<f8"))
    save("i64_4.npy", np.array([0, -1, 2**63 - 1, -2**63], dtype="<i8"))
    save("i32_2x2.npy", np.array([[1, -2], [2**31 - 1, -2**31]], dtype="<i4"))
    save("u8_5.npy", np.array([0, 1, 127, 128, 255], dtype="u1"))
    save("bool_2x2.npy", np.array([[True, False], [False, True]]))
    save("f64_scalar.npy", np.array(2.5, dtype="<f8"))
    save("f32_0x3.npy", np.zeros((0, 3), dtype="<f4"))
    # 15 dimensions: here numpy's 20 spaces of growth room after the dict
    # push the data from offset 128 to 192, so a writer that forgets them
    # is caught by the byte comparison.
    save("f32_15d.npy", np.arange(6, dtype="<f4").reshape((2,) + (1,) * 13 + (3,)))
    # Format versions 2.0 and 3.0 (numpy only uses them when it must).
    save("v2_f64_2x2.npy", np.array([[1.5, 2.5], [3.5, 4.5]], dtype="<f8"), version=(2, 0))
    save("v3_i32_3.npy", np.array([7, 8, 9], dtype="<i4"), version=(3, 0))

    # Refused files.
    save("be_f4.npy", np.array([1.0, 2.0], dtype=">f4"))
    save("fortran_f64.npy", np.asfortranarray(np.arange(6, dtype="<f8").reshape(2, 3)))
    save("f16.npy", np.array([1.0, 2.0], dtype="<f2"))
    save("c8.npy", np.array([1 + 2j], dtype="<c8"))
    save("object.npy", np.array([1, "a", None], dtype=object))
    save("structured.npy", np.zeros(2, dtype=[("x", "<f4"), ("y", "<i4")]))


if __name__ == "__main__":
    main()
