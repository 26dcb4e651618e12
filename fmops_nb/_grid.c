/* The drift engine's one compiled loop: counting float64 values into the cells of a uniform grid.

   `nbs/11_drift.ipynb` describes the grid and holds the numpy version of the same loop, which runs where this module
   was not built (no C compiler at install time). Both give the same counts and the same values outside the grid: a
   value's cell is trunc((x - lo) * scale), computed with the same two roundings as numpy's subtract then multiply
   (built with -ffp-contract=off, so no fused multiply-add changes a boundary case).

   count_cells(values, lo, scale, top, counts, outside) -> k
     values:  float64, C-contiguous
     counts:  int32, writable, at least top + 1 long; counts[c] += 1 for each value whose cell c is in 1..top
     outside: float64, writable, at least len(values) long; receives, in order, every value whose cell is not in
              1..top (below or above the grid, +-inf, NaN); k is how many
   The loop runs without the interpreter lock: the drift engine's threads count columns side by side. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static int get(PyObject *o, Py_buffer *b, int writable, char kind, Py_ssize_t size, const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(o, b, flags) < 0) return -1;
    const char *f = b->format ? b->format : "B";
    if (*f == '<' || *f == '=' || *f == '@') f++;
    int ok = b->itemsize == size && (f[0] == kind || (kind == 'i' && f[0] == 'l' && size == sizeof(long)))
             && f[1] == '\0' && b->ndim <= 1;
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "count_cells: %s must be a contiguous 1-d buffer of %zd-byte '%c' items",
                     name, size, kind);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

static PyObject *count_cells(PyObject *self, PyObject *args) {
    PyObject *xo, *co, *oo;
    double lo, scale;
    Py_ssize_t top;
    if (!PyArg_ParseTuple(args, "OddnOO", &xo, &lo, &scale, &top, &co, &oo)) return NULL;
    Py_buffer xb, cb, ob;
    if (get(xo, &xb, 0, 'd', 8, "values") < 0) return NULL;
    if (get(co, &cb, 1, 'i', 4, "counts") < 0) { PyBuffer_Release(&xb); return NULL; }
    if (get(oo, &ob, 1, 'd', 8, "outside") < 0) { PyBuffer_Release(&xb); PyBuffer_Release(&cb); return NULL; }
    Py_ssize_t n = xb.len / 8;
    PyObject *res = NULL;
    if (top < 1 || top > INT32_MAX - 1 || cb.len / 4 < top + 1 || ob.len / 8 < n) {
        PyErr_SetString(PyExc_ValueError, "count_cells: counts must hold top + 1 cells and outside every value");
    } else {
        const double *x = (const double *)xb.buf;
        int32_t *c = (int32_t *)cb.buf;
        double *out = (double *)ob.buf;
        const double lim = (double)top + 1.0;
        Py_ssize_t i = 0, k = 0;
        Py_BEGIN_ALLOW_THREADS
        for (; i + 4 <= n; i += 4) { /* four at a time: one test for the common case, all inside */
            double g0 = (x[i] - lo) * scale, g1 = (x[i + 1] - lo) * scale;
            double g2 = (x[i + 2] - lo) * scale, g3 = (x[i + 3] - lo) * scale;
            if ((g0 >= 1.0) & (g0 < lim) & (g1 >= 1.0) & (g1 < lim) & (g2 >= 1.0) & (g2 < lim) & (g3 >= 1.0)
                & (g3 < lim)) {
                c[(Py_ssize_t)g0]++; c[(Py_ssize_t)g1]++; c[(Py_ssize_t)g2]++; c[(Py_ssize_t)g3]++;
            } else {
                double g[4] = {g0, g1, g2, g3};
                for (int j = 0; j < 4; j++) {
                    if (g[j] >= 1.0 && g[j] < lim) c[(Py_ssize_t)g[j]]++;
                    else out[k++] = x[i + j];
                }
            }
        }
        for (; i < n; i++) {
            double g = (x[i] - lo) * scale;
            if (g >= 1.0 && g < lim) c[(Py_ssize_t)g]++;
            else out[k++] = x[i];
        }
        Py_END_ALLOW_THREADS
        res = PyLong_FromSsize_t(k);
    }
    PyBuffer_Release(&xb); PyBuffer_Release(&cb); PyBuffer_Release(&ob);
    return res;
}

static PyMethodDef methods[] = {
    {"count_cells", count_cells, METH_VARARGS,
     "count_cells(values, lo, scale, top, counts, outside) -> number of values written to outside"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_grid", "The drift engine's grid-counting loop.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__grid(void) { return PyModule_Create(&module); }
