/* module.c: den._core, the only file that knows about Python.
 *
 * It exposes the growable network (net.h) as den._core.Net and the compact-model operations
 * (model.h) as its methods. Every array argument is validated here (dtype, shape, memory
 * layout, finiteness, ranges) before any state changes, so a bad argument raises a Python
 * exception and leaves the Net exactly as it was. Long work runs with the GIL released; a poll
 * hook re-acquires it a few times a second to honour Ctrl-C and report progress.
 *
 * The binding is strict: inputs must already be float32 / int32 / uint8, C-contiguous and
 * aligned (the den Python package converts user data once, with argument names in its
 * messages). Nothing is ever converted silently here.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include <math.h>
#include <string.h>

#include "den_blas.h"
#include "conv.h"
#include "den_common.h"
#include "model.h"
#include "net.h"

const char *den_status_str(den_status s) {
    switch (s) {
        case DEN_OK: return "ok";
        case DEN_ENOMEM: return "out of memory";
        case DEN_EINVAL: return "invalid argument";
        case DEN_EINTR: return "interrupted";
        case DEN_ENONFINITE: return "training diverged (loss became NaN or inf); lower the learning rate";
        case DEN_ETOOBIG: return "too large: a layer may hold at most 2**31 - 1 weights and 2**24 units";
        case DEN_EOVERFLOW: return "activations overflowed float32 (NaN or inf): the inputs are too large";
    }
    return "unknown error";
}

/* Raise the Python exception for a failed core call (unless one is already set, e.g. the
 * KeyboardInterrupt raised inside the poll hook). Returns NULL for convenience. */
static PyObject *raise_status(den_status s, const char *what) {
    if (PyErr_Occurred()) return NULL;
    switch (s) {
        case DEN_ENOMEM: PyErr_Format(PyExc_MemoryError, "%s: out of memory", what); break;
        case DEN_EINTR: PyErr_SetNone(PyExc_KeyboardInterrupt); break;
        case DEN_ENONFINITE:
        case DEN_EOVERFLOW: PyErr_Format(PyExc_FloatingPointError, "%s: %s", what, den_status_str(s)); break;
        case DEN_ETOOBIG: PyErr_Format(PyExc_OverflowError, "%s: %s", what, den_status_str(s)); break;
        default: PyErr_Format(PyExc_ValueError, "%s: %s", what, den_status_str(s)); break;
    }
    return NULL;
}

/* ---- the Net type ---------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    den_net *net;
    int busy; /* set (with the GIL held) while a call works on the net without the GIL */
    long long workspace_bytes; /* working memory of the last train() call (model.h's formula) */
} NetObject;

static PyTypeObject NetType;

static int claim(NetObject *o) {
    if (o->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this Net is in use by another thread; a Net may only be used by one thread at a time");
        return -1;
    }
    o->busy = 1;
    return 0;
}

static NetObject *wrap_net(den_net *net) {
    NetObject *o = PyObject_New(NetObject, &NetType);
    if (!o) {
        den_net_free(net);
        return NULL;
    }
    o->net = net;
    o->busy = 0;
    o->workspace_bytes = 0;
    return o;
}

static void Net_dealloc(NetObject *o) {
    den_net_free(o->net);
    PyObject_Free(o);
}

/* ---- argument checking ----------------------------------------------------------------------- */

/* An array argument must be exactly this dtype, C-contiguous and aligned, with ndim dims; each
 * shape[i] >= 0 must match. Returns a borrowed array or NULL with an exception set. */
static PyArrayObject *want_array(PyObject *obj, const char *name, int typenum, int ndim, const npy_intp *shape) {
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a numpy array, not %.80s", name, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)obj;
    if (PyArray_TYPE(a) != typenum || !PyArray_ISNOTSWAPPED(a)) {
        PyArray_Descr *want = PyArray_DescrFromType(typenum);
        PyErr_Format(PyExc_TypeError, "%s must have dtype %S (native byte order), got %S", name, (PyObject *)want,
                     (PyObject *)PyArray_DESCR(a));
        Py_XDECREF(want);
        return NULL;
    }
    if (!PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISALIGNED(a)) {
        PyErr_Format(PyExc_ValueError, "%s must be C-contiguous and aligned (use numpy.ascontiguousarray)", name);
        return NULL;
    }
    if (PyArray_NDIM(a) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must have %d dimension(s), got %d", name, ndim, PyArray_NDIM(a));
        return NULL;
    }
    for (int i = 0; i < ndim; i++) {
        if (shape && shape[i] >= 0 && PyArray_DIM(a, i) != shape[i]) {
            PyErr_Format(PyExc_ValueError, "%s has shape[%d] = %zd, expected %zd", name, i, (Py_ssize_t)PyArray_DIM(a, i),
                         (Py_ssize_t)shape[i]);
            return NULL;
        }
    }
    return a;
}

/* ValueError "<name> = <value> must be <what>" (PyErr_Format has no %g). */
static PyObject *bad_double(const char *name, double value, const char *what) {
    char v[32];
    snprintf(v, sizeof v, "%g", value);
    return PyErr_Format(PyExc_ValueError, "%s = %s must be %s", name, v, what);
}

static int check_finite(PyArrayObject *a, const char *name) {
    const float *p = PyArray_DATA(a);
    npy_intp n = PyArray_SIZE(a);
    for (npy_intp i = 0; i < n; i++) {
        if (!isfinite(p[i])) {
            PyErr_Format(PyExc_ValueError, "%s contains NaN or inf (flat index %zd)", name, (Py_ssize_t)i);
            return -1;
        }
    }
    return 0;
}

/* Inputs X: float32 (n, cols), finite, n >= min_rows. */
static PyArrayObject *want_inputs(PyObject *obj, const char *name, int cols, npy_intp min_rows) {
    npy_intp shape[2] = {-1, cols};
    PyArrayObject *a = want_array(obj, name, NPY_FLOAT32, 2, shape);
    if (!a) return NULL;
    if (PyArray_DIM(a, 0) < min_rows) {
        PyErr_Format(PyExc_ValueError, "%s has %zd rows; at least %zd needed", name, (Py_ssize_t)PyArray_DIM(a, 0),
                     (Py_ssize_t)min_rows);
        return NULL;
    }
    if (check_finite(a, name) < 0) return NULL;
    return a;
}

/* Targets for head h: float32 (n, k) in [0, 1] for sigmoid, int32 (n) in [0, k) for softmax. */
static PyArrayObject *want_targets(PyObject *obj, const char *name, const den_net_layer *H, npy_intp n) {
    if (H->kind == DEN_HEAD_SOFTMAX) {
        npy_intp shape[1] = {n};
        PyArrayObject *a = want_array(obj, name, NPY_INT32, 1, shape);
        if (!a) return NULL;
        const int32_t *y = PyArray_DATA(a);
        for (npy_intp i = 0; i < n; i++)
            if (y[i] < 0 || y[i] >= H->n_out) {
                PyErr_Format(PyExc_ValueError, "%s[%zd] = %d is not a class of this softmax head (0..%d)", name,
                             (Py_ssize_t)i, (int)y[i], H->n_out - 1);
                return NULL;
            }
        return a;
    }
    npy_intp shape[2] = {n, H->n_out};
    PyArrayObject *a = want_array(obj, name, NPY_FLOAT32, 2, shape);
    if (!a) return NULL;
    const float *y = PyArray_DATA(a);
    for (npy_intp i = 0; i < n * H->n_out; i++)
        if (!(y[i] >= 0.0f && y[i] <= 1.0f)) {
            char v[32];
            snprintf(v, sizeof v, "%g", (double)y[i]);
            PyErr_Format(PyExc_ValueError, "%s must hold sigmoid targets in [0, 1]; flat index %zd is %s", name,
                         (Py_ssize_t)i, v);
            return NULL;
        }
    return a;
}

static int want_head(const den_net *net, int h) {
    if (h < 0 || h >= net->n_heads) {
        PyErr_Format(PyExc_IndexError, "head %d does not exist (this net has %d head(s))", h, net->n_heads);
        return -1;
    }
    return 0;
}

/* A per-layer list of flag arrays: None, or a sequence of n_layers items that are each None or
 * a uint8/bool array of that layer's unit count. flags[l] receives the data pointer or NULL.
 * *keep receives a new tuple holding a reference to every array used, so that the pointers stay
 * valid while the GIL is released even if the caller's list changes meanwhile. */
static int want_layer_flags(PyObject *obj, const char *name, const den_net *net, const uint8_t **flags,
                            PyObject **keep) {
    *keep = NULL;
    for (int l = 0; l < net->n_layers; l++) flags[l] = NULL;
    if (obj == NULL || obj == Py_None) return 0;
    PyObject *seq = PySequence_Fast(obj, "must be a sequence");
    if (!seq) {
        PyErr_Format(PyExc_TypeError, "%s must be None or a sequence with one entry per hidden layer", name);
        return -1;
    }
    if (PySequence_Fast_GET_SIZE(seq) != net->n_layers) {
        PyErr_Format(PyExc_ValueError, "%s must have %d entries (one per hidden layer), got %zd", name, net->n_layers,
                     PySequence_Fast_GET_SIZE(seq));
        Py_DECREF(seq);
        return -1;
    }
    PyObject *held = PyTuple_New(net->n_layers);
    if (!held) {
        Py_DECREF(seq);
        return -1;
    }
    for (int l = 0; l < net->n_layers; l++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, l);
        Py_INCREF(item);
        PyTuple_SET_ITEM(held, l, item);
        if (item == Py_None) continue;
        char label[96];
        snprintf(label, sizeof label, "%s[%d]", name, l);
        npy_intp shape[1] = {net->layers[l].n_out};
        PyArrayObject *a = NULL;
        if (PyArray_Check(item) && PyArray_TYPE((PyArrayObject *)item) == NPY_BOOL)
            a = want_array(item, label, NPY_BOOL, 1, shape);
        else
            a = want_array(item, label, NPY_UINT8, 1, shape);
        if (!a) {
            Py_DECREF(held);
            Py_DECREF(seq);
            return -1;
        }
        flags[l] = PyArray_DATA(a);
    }
    Py_DECREF(seq);
    *keep = held;
    return 0;
}

static int want_flags(PyObject *obj, const char *name, npy_intp n, const uint8_t **flags) {
    *flags = NULL;
    if (obj == NULL || obj == Py_None) return 0;
    npy_intp shape[1] = {n};
    PyArrayObject *a = (PyArray_Check(obj) && PyArray_TYPE((PyArrayObject *)obj) == NPY_BOOL)
                           ? want_array(obj, name, NPY_BOOL, 1, shape)
                           : want_array(obj, name, NPY_UINT8, 1, shape);
    if (!a) return -1;
    *flags = PyArray_DATA(a);
    return 0;
}

static int want_net(PyObject *obj, const char *name, NetObject **out) {
    *out = NULL;
    if (obj == NULL || obj == Py_None) return 0;
    if (!PyObject_TypeCheck(obj, &NetType)) {
        PyErr_Format(PyExc_TypeError, "%s must be a den._core.Net or None", name);
        return -1;
    }
    *out = (NetObject *)obj;
    return 0;
}

static int head_kind(const char *s) {
    if (strcmp(s, "sigmoid") == 0) return DEN_HEAD_SIGMOID;
    if (strcmp(s, "softmax") == 0) return DEN_HEAD_SOFTMAX;
    return -1;
}

static PyObject *new_array(int nd, const npy_intp *dims, int typenum, const void *src, size_t bytes) {
    PyObject *a = PyArray_SimpleNew(nd, (npy_intp *)dims, typenum);
    if (a && bytes) memcpy(PyArray_DATA((PyArrayObject *)a), src, bytes);
    return a;
}

/* ---- poll hook: progress and Ctrl-C while the GIL is released --------------------------------- */

typedef struct {
    PyThreadState *ts;   /* saved thread state while the GIL is released */
    PyObject *callback;  /* Python callable(epoch, epochs, step, steps, loss) or NULL */
} poll_ctx;

static int poll_hook(void *vctx, const den_progress *p) {
    poll_ctx *ctx = vctx;
    PyEval_RestoreThread(ctx->ts);
    int stop = 0;
    if (PyErr_CheckSignals() < 0) stop = 1;
    if (!stop && ctx->callback) {
        PyObject *r = PyObject_CallFunction(ctx->callback, "iiLLd", p->epoch, p->epochs, (long long)p->step,
                                            (long long)p->steps, p->loss);
        if (!r) stop = 1; /* the callback's exception propagates */
        else Py_DECREF(r);
    }
    ctx->ts = PyEval_SaveThread();
    return stop;
}

/* ---- Net methods ------------------------------------------------------------------------------ */

/* Parse a sequence of ints of length 1..64 with each value in [lo, hi]. */
static int parse_ints(PyObject *obj, const char *name, int *out, int max_n, long lo, long hi) {
    PyObject *seq = PySequence_Fast(obj, "must be a sequence of ints");
    if (!seq) {
        PyErr_Format(PyExc_TypeError, "%s must be a sequence of ints", name);
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > max_n) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "%s has %zd entries; at most %d allowed", name, n, max_n);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "%s[%zd] must be an int", name, i);
            return -1;
        }
        if (v < lo || v > hi) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_ValueError, "%s[%zd] = %ld must be in %ld..%ld", name, i, v, lo, hi);
            return -1;
        }
        out[i] = (int)v;
    }
    Py_DECREF(seq);
    return (int)n;
}

static PyObject *Net_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"n_input", "widths", "seed", "conv", "input_shape", NULL};
    int n_input;
    PyObject *widths_obj, *conv_obj = NULL, *shape_obj = NULL;
    unsigned long long seed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iO|KOO", kwlist, &n_input, &widths_obj, &seed, &conv_obj, &shape_obj))
        return NULL;
    (void)type;
    int widths[64], n_dense = parse_ints(widths_obj, "widths", widths, 64, 1, 1 << 24);
    if (n_dense < 0) return NULL;
    if (n_dense < 1) return PyErr_Format(PyExc_ValueError, "widths must list at least one dense layer width");
    if (n_input < 1 || n_input > (1 << 24))
        return PyErr_Format(PyExc_ValueError, "n_input = %d must be in 1..%d", n_input, 1 << 24);
    den_conv_spec conv[64];
    int n_conv = 0, shape[3] = {n_input, 1, 1};
    if (conv_obj && conv_obj != Py_None) {
        PyObject *seq = PySequence_Fast(conv_obj, "conv must be a sequence of (filters, kernel, pool)");
        if (!seq) return NULL;
        n_conv = (int)PySequence_Fast_GET_SIZE(seq);
        if (n_conv + n_dense > 64) {
            Py_DECREF(seq);
            return PyErr_Format(PyExc_ValueError, "at most 64 layers in all");
        }
        for (int l = 0; l < n_conv; l++) {
            int v[3];
            char name[32];
            snprintf(name, sizeof name, "conv[%d]", l);
            int got = parse_ints(PySequence_Fast_GET_ITEM(seq, l), name, v, 3, 1, 1 << 24);
            if (got != 3) {
                Py_DECREF(seq);
                if (got >= 0) PyErr_Format(PyExc_ValueError, "%s must be (filters, kernel, pool)", name);
                return NULL;
            }
            if (v[1] % 2 == 0) {
                Py_DECREF(seq);
                return PyErr_Format(PyExc_ValueError, "%s: kernel %d must be odd ('same' padding)", name, v[1]);
            }
            conv[l] = (den_conv_spec){v[0], v[1], v[1], v[2]};
        }
        Py_DECREF(seq);
        if (n_conv > 0) {
            if (!shape_obj || shape_obj == Py_None)
                return PyErr_Format(PyExc_ValueError, "a conv trunk needs input_shape=(channels, height, width)");
            if (parse_ints(shape_obj, "input_shape", shape, 3, 1, 1 << 24) != 3) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "input_shape must be (channels, height, width)");
                return NULL;
            }
            if ((long long)shape[0] * shape[1] * shape[2] != n_input)
                return PyErr_Format(PyExc_ValueError, "input_shape %dx%dx%d does not have n_input = %d values", shape[0],
                                    shape[1], shape[2], n_input);
            int h = shape[1], w = shape[2];
            for (int l = 0; l < n_conv; l++) {
                if (h / conv[l].pool < 1 || w / conv[l].pool < 1)
                    return PyErr_Format(PyExc_ValueError, "conv[%d]: pooling %d shrinks a %dx%d map to nothing", l,
                                        conv[l].pool, h, w);
                h /= conv[l].pool;
                w /= conv[l].pool;
            }
        }
    }
    den_net *net;
    den_status s = den_net_new(&net, shape[0], shape[1], shape[2], n_conv, conv, n_dense, widths, seed);
    if (s != DEN_OK) return raise_status(s, "Net");
    return (PyObject *)wrap_net(net);
}

static PyObject *Net_clone(NetObject *self, PyObject *Py_UNUSED(ignored)) {
    den_net *net;
    den_status s = den_net_clone(&net, self->net);
    if (s != DEN_OK) return raise_status(s, "clone");
    return (PyObject *)wrap_net(net);
}

static PyObject *Net_get_n_input(NetObject *self, void *c) { (void)c; return PyLong_FromLong(self->net->n_input); }
static PyObject *Net_get_n_layers(NetObject *self, void *c) { (void)c; return PyLong_FromLong(self->net->n_layers); }
static PyObject *Net_get_n_heads(NetObject *self, void *c) { (void)c; return PyLong_FromLong(self->net->n_heads); }
static PyObject *Net_get_workspace_bytes(NetObject *self, void *c) {
    (void)c;
    return PyLong_FromLongLong(self->workspace_bytes);
}
static PyObject *Net_get_widths(NetObject *self, void *c) {
    (void)c;
    PyObject *t = PyTuple_New(self->net->n_layers);
    if (!t) return NULL;
    for (int l = 0; l < self->net->n_layers; l++) PyTuple_SET_ITEM(t, l, PyLong_FromLong(self->net->layers[l].n_out));
    return t;
}

static PyObject *Net_add_head(NetObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"kind", "k", "task", "seed", NULL};
    const char *kind_s;
    int k, task;
    unsigned long long seed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "sii|K", kwlist, &kind_s, &k, &task, &seed)) return NULL;
    int kind = head_kind(kind_s);
    if (kind < 0) return PyErr_Format(PyExc_ValueError, "kind must be 'sigmoid' or 'softmax', got '%s'", kind_s);
    if (k < 1 || k > (1 << 24)) return PyErr_Format(PyExc_ValueError, "k = %d outputs must be in 1..%d", k, 1 << 24);
    if (kind == DEN_HEAD_SOFTMAX && k < 2) return PyErr_Format(PyExc_ValueError, "a softmax head needs k >= 2 outputs, got %d", k);
    if (task < 0) return PyErr_Format(PyExc_ValueError, "task must be >= 0, got %d", task);
    if (claim(self) < 0) return NULL;
    int index;
    den_status s = den_net_add_head(self->net, kind, k, task, seed, &index);
    self->busy = 0;
    if (s != DEN_OK) return raise_status(s, "add_head");
    return PyLong_FromLong(index);
}

static int parse_counts(PyObject *obj, const den_net *net, int *count) {
    PyObject *seq = PySequence_Fast(obj, "counts must be a sequence of ints");
    if (!seq) return -1;
    if (PySequence_Fast_GET_SIZE(seq) != net->n_layers) {
        PyErr_Format(PyExc_ValueError, "counts must have %d entries (one per hidden layer), got %zd", net->n_layers,
                     PySequence_Fast_GET_SIZE(seq));
        Py_DECREF(seq);
        return -1;
    }
    for (int l = 0; l < net->n_layers; l++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, l));
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        if (v < 0 || (long long)v + net->layers[l].n_out > (1 << 24)) {
            PyErr_Format(PyExc_ValueError, "counts[%d] = %ld is out of range", l, v);
            Py_DECREF(seq);
            return -1;
        }
        count[l] = (int)v;
    }
    Py_DECREF(seq);
    return 0;
}

static int max_stamp_of(const den_net *net) {
    int m = 0;
    for (int l = 0; l < net->n_layers; l++) {
        const den_net_layer *L = &net->layers[l];
        if (L->n_out && L->stamp[L->n_out - 1] > m) m = L->stamp[L->n_out - 1];
    }
    for (int h = 0; h < net->n_heads; h++)
        if (den_head_task(&net->heads[h]) > m) m = den_head_task(&net->heads[h]);
    return m;
}

static PyObject *Net_add_units(NetObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"counts", "stamp", "seed", NULL};
    PyObject *counts_obj;
    int stamp;
    unsigned long long seed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Oi|K", kwlist, &counts_obj, &stamp, &seed)) return NULL;
    int count[64];
    if (parse_counts(counts_obj, self->net, count) < 0) return NULL;
    if (stamp < max_stamp_of(self->net))
        return PyErr_Format(PyExc_ValueError, "stamp %d is older than units already in the net (newest: %d)", stamp,
                            max_stamp_of(self->net));
    if (claim(self) < 0) return NULL;
    /* work on a clone so that a failure half-way leaves the net untouched */
    den_net *copy = NULL;
    den_status s = den_net_clone(&copy, self->net);
    if (s == DEN_OK) s = den_net_add_units(copy, count, stamp, seed);
    self->busy = 0;
    if (s != DEN_OK) {
        den_net_free(copy);
        return raise_status(s, "add_units");
    }
    den_net_free(self->net);
    self->net = copy;
    Py_RETURN_NONE;
}

static PyObject *Net_remove_units(NetObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"keep", NULL};
    PyObject *keep_obj, *hold;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O", kwlist, &keep_obj)) return NULL;
    const uint8_t *keep[64];
    if (want_layer_flags(keep_obj, "keep", self->net, keep, &hold) < 0) return NULL;
    for (int l = 0; l < self->net->n_layers; l++) {
        if (!keep[l]) continue;
        int kept = 0;
        for (int i = 0; i < self->net->layers[l].n_out; i++) kept += keep[l][i] != 0;
        if (kept == 0) {
            Py_XDECREF(hold);
            return PyErr_Format(PyExc_ValueError, "keep[%d] would remove every unit of hidden layer %d", l, l);
        }
    }
    if (claim(self) < 0) {
        Py_XDECREF(hold);
        return NULL;
    }
    den_status s = den_net_remove_units(self->net, keep);
    self->busy = 0;
    Py_XDECREF(hold);
    if (s != DEN_OK) return raise_status(s, "remove_units");
    Py_RETURN_NONE;
}

static PyObject *Net_duplicate_units(NetObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"dup", "stamp", NULL};
    PyObject *dup_obj, *hold;
    int stamp;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Oi", kwlist, &dup_obj, &stamp)) return NULL;
    const uint8_t *dup[64];
    if (want_layer_flags(dup_obj, "dup", self->net, dup, &hold) < 0) return NULL;
    if (stamp < max_stamp_of(self->net)) {
        Py_XDECREF(hold);
        return PyErr_Format(PyExc_ValueError, "stamp %d is older than units already in the net (newest: %d)", stamp,
                            max_stamp_of(self->net));
    }
    if (claim(self) < 0) {
        Py_XDECREF(hold);
        return NULL;
    }
    den_net *copy = NULL;
    den_status s = den_net_clone(&copy, self->net);
    if (s == DEN_OK) s = den_net_duplicate_units(copy, dup, stamp);
    if (s != DEN_OK) den_net_free(copy);
    self->busy = 0;
    Py_XDECREF(hold);
    if (s != DEN_OK) return raise_status(s, "duplicate_units");
    den_net_free(self->net);
    self->net = copy;
    Py_RETURN_NONE;
}

static PyObject *Net_restore_units(NetObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"prev", "which", NULL};
    PyObject *prev_obj, *which_obj, *hold;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O", kwlist, &NetType, &prev_obj, &which_obj)) return NULL;
    const den_net *prev = ((NetObject *)prev_obj)->net;
    const uint8_t *which[64];
    if (want_layer_flags(which_obj, "which", self->net, which, &hold) < 0) return NULL;
    if (prev->n_layers != self->net->n_layers || prev->n_input != self->net->n_input) {
        Py_XDECREF(hold);
        return PyErr_Format(PyExc_ValueError, "prev has a different architecture");
    }
    for (int l = 0; l < self->net->n_layers; l++) {
        if (!which[l]) continue;
        const den_net_layer *P = &prev->layers[l], *L = &self->net->layers[l];
        if (P->n_in > L->n_in) {
            Py_XDECREF(hold);
            return PyErr_Format(PyExc_ValueError, "prev's layer %d reads more units than this net's", l);
        }
        for (int i = P->n_out; i < L->n_out; i++)
            if (which[l][i]) {
                Py_XDECREF(hold);
                return PyErr_Format(PyExc_ValueError, "which[%d][%d]: unit %d did not exist in prev", l, i, i);
            }
    }
    if (claim(self) < 0) {
        Py_XDECREF(hold);
        return NULL;
    }
    den_status s = den_net_restore_units(self->net, prev, which);
    self->busy = 0;
    Py_XDECREF(hold);
    if (s != DEN_OK) return raise_status(s, "restore_units");
    Py_RETURN_NONE;
}

static PyObject *Net_drift(NetObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"prev", "layer", NULL};
    PyObject *prev_obj;
    int layer;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!i", kwlist, &NetType, &prev_obj, &layer)) return NULL;
    if (layer < 0 || layer >= self->net->n_layers)
        return PyErr_Format(PyExc_IndexError, "layer %d does not exist (%d hidden layers)", layer, self->net->n_layers);
    npy_intp n = self->net->layers[layer].n_out;
    PyObject *out = PyArray_SimpleNew(1, &n, NPY_FLOAT32);
    if (!out) return NULL;
    den_status s = den_net_drift(self->net, ((NetObject *)prev_obj)->net, layer, PyArray_DATA((PyArrayObject *)out));
    if (s != DEN_OK) {
        Py_DECREF(out);
        return raise_status(s, "drift (prev must be an earlier state of this net)");
    }
    return out;
}

static PyObject *Net_select(NetObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"head", NULL};
    int h;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i", kwlist, &h)) return NULL;
    if (want_head(self->net, h) < 0) return NULL;
    const den_net *net = self->net;
    PyObject *units = PyList_New(net->n_layers);
    npy_intp ni = net->layers[0].n_in;
    PyObject *inputs = PyArray_ZEROS(1, &ni, NPY_BOOL, 0);
    if (!units || !inputs) goto fail;
    uint8_t *ptr[64];
    for (int l = 0; l < net->n_layers; l++) {
        npy_intp n = net->layers[l].n_out;
        PyObject *a = PyArray_ZEROS(1, &n, NPY_BOOL, 0);
        if (!a) goto fail;
        PyList_SET_ITEM(units, l, a);
        ptr[l] = PyArray_DATA((PyArrayObject *)a);
    }
    den_status s = den_net_select(net, h, ptr, PyArray_DATA((PyArrayObject *)inputs));
    if (s != DEN_OK) {
        raise_status(s, "select");
        goto fail;
    }
    return Py_BuildValue("(NN)", units, inputs);
fail:
    Py_XDECREF(units);
    Py_XDECREF(inputs);
    return NULL;
}

static PyObject *Net_dead_units(NetObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"layer", NULL};
    int layer;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i", kwlist, &layer)) return NULL;
    if (layer < 0 || layer >= self->net->n_layers)
        return PyErr_Format(PyExc_IndexError, "layer %d does not exist (%d hidden layers)", layer, self->net->n_layers);
    npy_intp n = self->net->layers[layer].n_out;
    PyObject *out = PyArray_ZEROS(1, &n, NPY_BOOL, 0);
    if (!out) return NULL;
    den_net_dead_units(self->net, layer, PyArray_DATA((PyArrayObject *)out));
    return out;
}

static PyObject *Net_prefix(NetObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"task", NULL};
    int task;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i", kwlist, &task)) return NULL;
    int widths[64];
    den_net_prefix(self->net, task, widths);
    PyObject *t = PyTuple_New(self->net->n_layers);
    if (!t) return NULL;
    for (int l = 0; l < self->net->n_layers; l++) PyTuple_SET_ITEM(t, l, PyLong_FromLong(widths[l]));
    return t;
}

static PyObject *Net_nonzero(NetObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"task", NULL};
    int task = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|i", kwlist, &task)) return NULL;
    return PyLong_FromLongLong((long long)den_net_nonzero(self->net, task));
}

/* ---- state: copies out, validated copies in ---------------------------------------------------- */

static PyObject *layer_dict(const den_net_layer *L, int head) {
    npy_intp wd[2] = {L->n_out, (npy_intp)den_layer_cols(L)}, bd[1] = {L->n_out};
    size_t n = (size_t)L->n_out * (size_t)den_layer_cols(L);
    PyObject *W = new_array(2, wd, NPY_FLOAT32, L->W, n * sizeof(float));
    PyObject *b = new_array(1, bd, NPY_FLOAT32, L->b, (size_t)L->n_out * sizeof(float));
    PyObject *mask = new_array(2, wd, NPY_BOOL, L->mask, n);
    PyObject *stamp = new_array(1, bd, NPY_INT32, L->stamp, (size_t)L->n_out * sizeof(int32_t));
    if (!W || !b || !mask || !stamp) {
        Py_XDECREF(W);
        Py_XDECREF(b);
        Py_XDECREF(mask);
        Py_XDECREF(stamp);
        return NULL;
    }
    if (head)
        return Py_BuildValue("{sNsNsNsNss}", "W", W, "b", b, "mask", mask, "stamp", stamp, "kind",
                             L->kind == DEN_HEAD_SOFTMAX ? "softmax" : "sigmoid");
    return Py_BuildValue("{sNsNsNsNsssisisisi}", "W", W, "b", b, "mask", mask, "stamp", stamp, "op",
                         L->op == DEN_OP_CONV ? "conv" : "dense", "kh", L->kh, "kw", L->kw, "pool", L->pool, "span",
                         L->span);
}

static PyObject *Net_get_state(NetObject *self, PyObject *Py_UNUSED(ignored)) {
    const den_net *net = self->net;
    PyObject *layers = PyList_New(net->n_layers), *heads = PyList_New(net->n_heads);
    if (!layers || !heads) goto fail;
    for (int l = 0; l < net->n_layers; l++) {
        PyObject *d = layer_dict(&net->layers[l], 0);
        if (!d) goto fail;
        PyList_SET_ITEM(layers, l, d);
    }
    for (int h = 0; h < net->n_heads; h++) {
        PyObject *d = layer_dict(&net->heads[h], 1);
        if (!d) goto fail;
        PyList_SET_ITEM(heads, h, d);
    }
    return Py_BuildValue("{sis(iii)sNsN}", "n_input", net->n_input, "input_shape", net->in_c, net->in_h, net->in_w,
                         "layers", layers, "heads", heads);
fail:
    Py_XDECREF(layers);
    Py_XDECREF(heads);
    return NULL;
}

static int dict_int(PyObject *d, const char *key, const char *name, long lo, long hi, int *out) {
    PyObject *v = PyDict_GetItemString(d, key);
    long x = v ? PyLong_AsLong(v) : -1;
    if (!v || (x == -1 && PyErr_Occurred()) || x < lo || x > hi) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s['%s'] must be an int in %ld..%ld", name, key, lo, hi);
        return -1;
    }
    *out = (int)x;
    return 0;
}

/* Fill L from a state dict, checking everything. n_in/span: expected input units and span. */
static int layer_from_dict(den_net_layer *L, PyObject *d, const char *name, int n_in, int span, int head) {
    if (!PyDict_Check(d)) {
        PyErr_Format(PyExc_TypeError, "%s must be a dict", name);
        return -1;
    }
    char label[128];
    PyObject *Wo = PyDict_GetItemString(d, "W"), *bo = PyDict_GetItemString(d, "b");
    PyObject *mo = PyDict_GetItemString(d, "mask"), *so = PyDict_GetItemString(d, "stamp");
    if (!Wo || !bo || !mo || !so) {
        PyErr_Format(PyExc_KeyError, "%s needs the keys W, b, mask and stamp", name);
        return -1;
    }
    snprintf(label, sizeof label, "%s['W']", name);
    npy_intp wshape[2] = {-1, (npy_intp)n_in * span};
    PyArrayObject *W = want_array(Wo, label, NPY_FLOAT32, 2, wshape);
    if (!W || check_finite(W, label) < 0) return -1;
    npy_intp n_out = PyArray_DIM(W, 0);
    if (n_out > (1 << 24) || (!head && n_out < 1) || (head && n_out < 1)) {
        PyErr_Format(PyExc_ValueError, "%s has %zd units", label, (Py_ssize_t)n_out);
        return -1;
    }
    npy_intp bshape[1] = {n_out};
    snprintf(label, sizeof label, "%s['b']", name);
    PyArrayObject *b = want_array(bo, label, NPY_FLOAT32, 1, bshape);
    if (!b || check_finite(b, label) < 0) return -1;
    snprintf(label, sizeof label, "%s['mask']", name);
    PyArrayObject *m = want_array(mo, label, NPY_BOOL, 2, PyArray_DIMS(W));
    if (!m) return -1;
    snprintf(label, sizeof label, "%s['stamp']", name);
    PyArrayObject *s = want_array(so, label, NPY_INT32, 1, bshape);
    if (!s) return -1;
    const float *w = PyArray_DATA(W);
    const uint8_t *mk = PyArray_DATA(m);
    const int32_t *st = PyArray_DATA(s);
    npy_intp total = PyArray_SIZE(W);
    for (npy_intp i = 0; i < total; i++)
        if (mk[i] > 1 || (!mk[i] && w[i] != 0.0f)) {
            PyErr_Format(PyExc_ValueError, "%s: weight at flat index %zd is nonzero where the mask forbids it", name,
                         (Py_ssize_t)i);
            return -1;
        }
    for (npy_intp i = 0; i < n_out; i++)
        if (st[i] < 0 || (i > 0 && st[i] < st[i - 1]) || (head && st[i] != st[0])) {
            PyErr_Format(PyExc_ValueError, "%s: stamps must be >= 0 and non-decreasing (and equal within a head)", label);
            return -1;
        }
    int kind = 0;
    if (head) {
        PyObject *ko = PyDict_GetItemString(d, "kind");
        const char *ks = ko && PyUnicode_Check(ko) ? PyUnicode_AsUTF8(ko) : NULL;
        kind = ks ? head_kind(ks) : -1;
        if (kind < 0 || (kind == DEN_HEAD_SOFTMAX && n_out < 2)) {
            PyErr_Format(PyExc_ValueError, "%s['kind'] must be 'sigmoid' or 'softmax' (softmax needs k >= 2)", name);
            return -1;
        }
    }
    memset(L, 0, sizeof *L);
    L->n_out = (int)n_out;
    L->n_in = n_in;
    L->span = span;
    L->kind = kind;
    L->op = DEN_OP_DENSE;
    L->pool = 1;
    size_t n = (size_t)total;
    L->W = malloc(n * sizeof(float) + 1);
    L->b = malloc((size_t)n_out * sizeof(float) + 1);
    L->mask = malloc(n + 1);
    L->stamp = malloc((size_t)n_out * sizeof(int32_t) + 1);
    if (!L->W || !L->b || !L->mask || !L->stamp) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(L->W, w, n * sizeof(float));
    memcpy(L->b, PyArray_DATA(b), (size_t)n_out * sizeof(float));
    memcpy(L->mask, mk, n);
    memcpy(L->stamp, st, (size_t)n_out * sizeof(int32_t));
    return 0;
}

static PyObject *Net_from_state(PyObject *cls, PyObject *state) {
    (void)cls;
    if (!PyDict_Check(state)) return PyErr_Format(PyExc_TypeError, "state must be a dict from Net.get_state()");
    PyObject *ni = PyDict_GetItemString(state, "n_input"), *so = PyDict_GetItemString(state, "input_shape");
    PyObject *lo = PyDict_GetItemString(state, "layers"), *ho = PyDict_GetItemString(state, "heads");
    if (!ni || !lo || !ho || !PyList_Check(lo) || !PyList_Check(ho))
        return PyErr_Format(PyExc_ValueError, "state needs n_input (int), layers (list) and heads (list)");
    long n_input = PyLong_AsLong(ni);
    if (n_input == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t nl = PyList_GET_SIZE(lo), nh = PyList_GET_SIZE(ho);
    if (n_input < 1 || n_input > (1 << 24) || nl < 1 || nl > 64 || nh > (1 << 20))
        return PyErr_Format(PyExc_ValueError, "state has n_input=%ld, %zd layers, %zd heads: out of range", n_input, nl, nh);
    int shape[3] = {(int)n_input, 1, 1};
    if (so && so != Py_None) {
        if (parse_ints(so, "input_shape", shape, 3, 1, 1 << 24) != 3) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "input_shape must be (channels, height, width)");
            return NULL;
        }
        if ((long long)shape[0] * shape[1] * shape[2] != n_input)
            return PyErr_Format(PyExc_ValueError, "input_shape does not hold n_input = %ld values", n_input);
    }
    den_net *net = calloc(1, sizeof *net);
    if (!net) return PyErr_NoMemory();
    net->n_input = (int)n_input;
    net->in_c = shape[0];
    net->in_h = shape[1];
    net->in_w = shape[2];
    net->layers = calloc((size_t)nl, sizeof *net->layers);
    net->heads = calloc((size_t)(nh > 0 ? nh : 1), sizeof *net->heads);
    if (!net->layers || !net->heads) {
        den_net_free(net);
        return PyErr_NoMemory();
    }
    /* walk the layers with the geometry of what each one reads */
    int units = shape[0], h = shape[1], w = shape[2], seen_dense = 0;
    for (Py_ssize_t l = 0; l < nl; l++) {
        char name[64];
        snprintf(name, sizeof name, "layers[%zd]", l);
        PyObject *d = PyList_GET_ITEM(lo, l);
        if (!PyDict_Check(d)) {
            den_net_free(net);
            return PyErr_Format(PyExc_TypeError, "%s must be a dict", name);
        }
        PyObject *op_o = PyDict_GetItemString(d, "op");
        const char *op_s = op_o && PyUnicode_Check(op_o) ? PyUnicode_AsUTF8(op_o) : "dense";
        int conv = op_s && strcmp(op_s, "conv") == 0, kh = 0, kw = 0, pool = 1;
        if (!op_s || (!conv && strcmp(op_s, "dense") != 0) || (conv && seen_dense)) {
            den_net_free(net);
            return PyErr_Format(PyExc_ValueError, "%s['op'] must be 'conv' or 'dense', conv layers first", name);
        }
        if (conv && (dict_int(d, "kh", name, 1, 1 << 10, &kh) < 0 || dict_int(d, "kw", name, 1, 1 << 10, &kw) < 0 ||
                     dict_int(d, "pool", name, 1, 1 << 10, &pool) < 0 || kh % 2 == 0 || kw % 2 == 0 ||
                     h / pool < 1 || w / pool < 1)) {
            den_net_free(net);
            if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "%s: bad conv geometry", name);
            return NULL;
        }
        seen_dense |= !conv;
        net->n_layers = (int)l + 1;
        if (layer_from_dict(&net->layers[l], d, name, units, conv ? kh * kw : h * w, 0) < 0) {
            den_net_free(net);
            return NULL;
        }
        den_net_layer *L = &net->layers[l];
        if (conv) {
            L->op = DEN_OP_CONV;
            L->h = h;
            L->w = w;
            L->kh = kh;
            L->kw = kw;
            L->pool = pool;
            h /= pool;
            w /= pool;
        } else {
            h = w = 1;
        }
        units = L->n_out;
    }
    if (!seen_dense) {
        den_net_free(net);
        return PyErr_Format(PyExc_ValueError, "state needs at least one dense layer under the heads");
    }
    const den_net_layer *top = &net->layers[nl - 1];
    for (Py_ssize_t hd = 0; hd < nh; hd++) {
        char name[64];
        snprintf(name, sizeof name, "heads[%zd]", hd);
        net->n_heads = (int)hd + 1;
        if (layer_from_dict(&net->heads[hd], PyList_GET_ITEM(ho, hd), name, units, 1, 1) < 0) {
            den_net_free(net);
            return NULL;
        }
        /* a head may not read units born after its task */
        const den_net_layer *H = &net->heads[hd];
        for (int r = 0; r < H->n_out; r++)
            for (int c = 0; c < H->n_in; c++)
                if (H->mask[(int64_t)r * H->n_in + c] && top->stamp[c] > H->stamp[0]) {
                    den_net_free(net);
                    return PyErr_Format(PyExc_ValueError, "%s reads unit %d born after its task", name, c);
                }
    }
    return (PyObject *)wrap_net(net);
}

/* ---- training and inference -------------------------------------------------------------------- */

static int parse_reg(PyObject *d, const char *name, den_reg *r) {
    memset(r, 0, sizeof *r);
    if (!d || d == Py_None) return 0;
    if (!PyDict_Check(d)) {
        PyErr_Format(PyExc_TypeError, "%s must be a dict with keys l1, wd, pull, group", name);
        return -1;
    }
    const char *keys[4] = {"l1", "wd", "pull", "group"};
    float *vals[4] = {&r->l1, &r->wd, &r->pull, &r->group};
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(d, &pos, &k, &v)) {
        const char *ks = PyUnicode_Check(k) ? PyUnicode_AsUTF8(k) : NULL;
        int found = -1;
        for (int i = 0; ks && i < 4; i++)
            if (strcmp(ks, keys[i]) == 0) found = i;
        if (found < 0) {
            PyErr_Format(PyExc_KeyError, "%s: unknown regulariser %R (known: l1, wd, pull, group)", name, k);
            return -1;
        }
        double x = PyFloat_AsDouble(v);
        if (x == -1.0 && PyErr_Occurred()) return -1;
        if (!(x >= 0.0) || !isfinite(x)) {
            PyErr_Format(PyExc_ValueError, "%s['%s'] must be a finite number >= 0, got %R", name, keys[found], v);
            return -1;
        }
        *vals[found] = (float)x;
    }
    return 0;
}

/* The parsed form of Net.train / Net.loss arguments that select what to gather. */
typedef struct {
    const uint8_t *units[64], *train[64], *inputs;
    PyObject *hold_units, *hold_train;
} gather_args;

static void gather_args_release(gather_args *a) {
    Py_XDECREF(a->hold_units);
    Py_XDECREF(a->hold_train);
}

static int parse_gather_args(NetObject *self, PyObject *units, PyObject *train, PyObject *inputs, gather_args *a) {
    memset(a, 0, sizeof *a);
    if (want_layer_flags(units, "units", self->net, a->units, &a->hold_units) < 0) return -1;
    if (want_layer_flags(train, "train", self->net, a->train, &a->hold_train) < 0 ||
        want_flags(inputs, "inputs", self->net->layers[0].n_in, &a->inputs) < 0) {
        gather_args_release(a);
        return -1;
    }
    return 0;
}

static PyObject *Net_train(NetObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"data", "epochs", "batch_size", "lr", "optimizer", "units", "train", "inputs",
                             "train_heads", "head_only", "max_stamp", "use_stamps", "layer_reg", "head_reg",
                             "anchor", "coef", "lr_decay", "beta1", "beta2", "eps", "momentum", "seed",
                             "callback", "poll_interval", NULL};
    PyObject *data_obj, *units = NULL, *train = NULL, *inputs = NULL, *train_heads = NULL;
    PyObject *layer_reg = NULL, *head_reg = NULL, *anchor_obj = NULL, *coef_obj = NULL, *callback = NULL;
    int epochs, batch_size, head_only = 0, max_stamp = -1, use_stamps = 1;
    double lr, lr_decay = 1.0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, momentum = 0.0, poll_interval = 0.1;
    const char *opt_s = "adam";
    unsigned long long seed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Oiid|sOOOOpipOOOOdddddKOd", kwlist, &data_obj, &epochs, &batch_size,
                                     &lr, &opt_s, &units, &train, &inputs, &train_heads, &head_only, &max_stamp,
                                     &use_stamps, &layer_reg, &head_reg, &anchor_obj, &coef_obj, &lr_decay, &beta1,
                                     &beta2, &eps, &momentum, &seed, &callback, &poll_interval))
        return NULL;
    den_net *net = self->net;
    if (epochs < 0 || epochs > 1000000) return PyErr_Format(PyExc_ValueError, "epochs = %d must be in 0..1000000", epochs);
    if (batch_size < 1) return PyErr_Format(PyExc_ValueError, "batch_size = %d must be >= 1", batch_size);
    if (!(lr > 0.0) || !isfinite(lr)) return bad_double("lr", lr, "a finite number > 0");
    if (!(lr_decay > 0.0 && lr_decay <= 1.0)) return bad_double("lr_decay", lr_decay, "in (0, 1]");
    if (!(beta1 >= 0.0 && beta1 < 1.0) || !(beta2 >= 0.0 && beta2 < 1.0) || !(eps > 0.0) || !isfinite(eps))
        return PyErr_Format(PyExc_ValueError, "Adam needs 0 <= beta1, beta2 < 1 and eps > 0");
    if (!(momentum >= 0.0 && momentum < 1.0)) return bad_double("momentum", momentum, "in [0, 1)");
    if (!(poll_interval > 0.0)) return PyErr_Format(PyExc_ValueError, "poll_interval must be > 0");
    int opt_kind = strcmp(opt_s, "adam") == 0 ? DEN_OPT_ADAM : strcmp(opt_s, "sgd") == 0 ? DEN_OPT_SGD : -1;
    if (opt_kind < 0) return PyErr_Format(PyExc_ValueError, "optimizer must be 'adam' or 'sgd', got '%s'", opt_s);
    if (callback && callback != Py_None && !PyCallable_Check(callback))
        return PyErr_Format(PyExc_TypeError, "callback must be callable or None");
    if (head_only && ((units && units != Py_None) || (train && train != Py_None) || (inputs && inputs != Py_None) ||
                      max_stamp != -1))
        return PyErr_Format(PyExc_ValueError,
                            "head_only training gathers no hidden layer: units, train, inputs and max_stamp must be left out");
    den_gather g;
    memset(&g, 0, sizeof g);
    if (parse_reg(layer_reg, "layer_reg", &g.layer_reg) < 0 || parse_reg(head_reg, "head_reg", &g.head_reg) < 0) return NULL;
    NetObject *anchor, *coef;
    if (want_net(anchor_obj, "anchor", &anchor) < 0 || want_net(coef_obj, "coef", &coef) < 0) return NULL;
    if (coef && !anchor) return PyErr_Format(PyExc_ValueError, "coef (pull coefficients) needs an anchor");

    /* data: a sequence of (X, Y, head) */
    PyObject *seq = PySequence_Fast(data_obj, "data must be a sequence of (X, Y, head) tuples");
    if (!seq) return NULL;
    Py_ssize_t nd = PySequence_Fast_GET_SIZE(seq);
    PyObject *result = NULL;
    PyObject *hold = NULL; /* our references to every array used without the GIL */
    gather_args ga;
    int have_ga = 0, claimed = 0;
    den_data *data = NULL;
    int *heads = NULL;
    uint8_t *head_train = NULL;
    den_model *m = NULL;
    if (nd < 1 || nd > (1 << 20)) {
        PyErr_Format(PyExc_ValueError, "data must hold 1 or more (X, Y, head) tuples, got %zd", nd);
        goto done;
    }
    data = calloc((size_t)nd, sizeof *data);
    heads = calloc((size_t)nd, sizeof *heads);
    head_train = calloc((size_t)nd, 1);
    if (!data || !heads || !head_train) {
        PyErr_NoMemory();
        goto done;
    }
    int n_heads = 0;
    hold = PyList_New(0);
    if (!hold) goto done;
    for (Py_ssize_t i = 0; i < nd; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *Xo, *Yo;
        int h;
        if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "OOi", &Xo, &Yo, &h)) {
            if (!PyErr_Occurred()) PyErr_Format(PyExc_TypeError, "data[%zd] must be a tuple (X, Y, head)", i);
            else {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError, "data[%zd] must be a tuple (X, Y, head)", i);
            }
            goto done;
        }
        if (want_head(net, h) < 0) goto done;
        const den_net_layer *H = &net->heads[h];
        int cols = net->n_input;
        if (head_only) {
            /* the features a head reads: Net.features(X, head, use_stamps) */
            if (n_heads > 0 && heads[0] != h) {
                PyErr_Format(PyExc_ValueError, "head_only training takes data for a single head");
                goto done;
            }
            int widths[64];
            den_net_prefix(net, use_stamps ? den_head_task(H) : -1, widths);
            cols = widths[net->n_layers - 1];
            max_stamp = use_stamps ? den_head_task(H) : -1;
        }
        char label[64];
        snprintf(label, sizeof label, "data[%zd] X", i);
        PyArrayObject *X = want_inputs(Xo, label, cols, 1);
        if (!X) goto done;
        snprintf(label, sizeof label, "data[%zd] Y", i);
        PyArrayObject *Y = want_targets(Yo, label, H, PyArray_DIM(X, 0));
        if (!Y || PyList_Append(hold, Xo) < 0 || PyList_Append(hold, Yo) < 0) goto done;
        int ch = -1;
        for (int j = 0; j < n_heads; j++)
            if (heads[j] == h) ch = j;
        if (ch < 0) {
            ch = n_heads;
            heads[n_heads++] = h;
        }
        data[i].X = PyArray_DATA(X);
        data[i].n = PyArray_DIM(X, 0);
        data[i].n_features = cols;
        data[i].ysig = H->kind == DEN_HEAD_SIGMOID ? PyArray_DATA(Y) : NULL;
        data[i].ycls = H->kind == DEN_HEAD_SOFTMAX ? PyArray_DATA(Y) : NULL;
        data[i].head = ch;
    }
    /* trainable heads */
    for (int j = 0; j < n_heads; j++) head_train[j] = 1;
    if (train_heads && train_heads != Py_None) {
        PyObject *ts = PySequence_Fast(train_heads, "train_heads must be a sequence of head indices");
        if (!ts) goto done;
        for (int j = 0; j < n_heads; j++) head_train[j] = 0;
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(ts); i++) {
            long h = PyLong_AsLong(PySequence_Fast_GET_ITEM(ts, i));
            if (h == -1 && PyErr_Occurred()) {
                Py_DECREF(ts);
                goto done;
            }
            int found = 0;
            for (int j = 0; j < n_heads; j++)
                if (heads[j] == h) head_train[j] = 1, found = 1;
            if (!found) {
                Py_DECREF(ts);
                PyErr_Format(PyExc_ValueError, "train_heads names head %ld, which no data entry uses", h);
                goto done;
            }
        }
        Py_DECREF(ts);
    }
    if (parse_gather_args(self, units, train, inputs, &ga) < 0) goto done;
    have_ga = 1;
    if (inputs && inputs != Py_None && PyList_Append(hold, inputs) < 0) goto done;
    /* anchor/coef shapes: anchor must be an earlier state of this net */
    if (anchor) {
        const den_net *A = anchor->net;
        int ok = A->n_layers == net->n_layers && A->n_input == net->n_input;
        for (int l = 0; ok && l < net->n_layers; l++)
            ok = A->layers[l].n_out <= net->layers[l].n_out && A->layers[l].n_in <= net->layers[l].n_in;
        if (!ok) {
            PyErr_SetString(PyExc_ValueError, "anchor must be an earlier state (a clone) of this net");
            goto done;
        }
        if (coef) {
            const den_net *C = coef->net;
            ok = C->n_layers == A->n_layers;
            for (int l = 0; ok && l < A->n_layers; l++)
                ok = C->layers[l].n_out == A->layers[l].n_out && C->layers[l].n_in == A->layers[l].n_in;
            if (!ok) {
                PyErr_SetString(PyExc_ValueError, "coef must have the same shape as anchor");
                goto done;
            }
        }
    }
    g.units = ga.units;
    g.train = ga.train;
    g.inputs = ga.inputs;
    g.heads = heads;
    g.n_heads = n_heads;
    g.head_train = head_train;
    g.head_only = head_only;
    g.max_stamp = max_stamp;
    g.use_stamps = use_stamps;
    g.training = 1;
    g.anchor = anchor ? anchor->net : NULL;
    g.coef = coef ? coef->net : NULL;
    if (claim(self) < 0) goto done;
    claimed = 1;
    if (anchor && anchor != self && claim(anchor) < 0) goto done;
    if (coef && coef != self && coef != anchor && claim(coef) < 0) {
        if (anchor && anchor != self) anchor->busy = 0;
        goto done;
    }
    den_train_cfg cfg = {
        .epochs = epochs, .batch_size = batch_size,
        .opt = {.kind = opt_kind, .lr = (float)lr, .beta1 = (float)beta1, .beta2 = (float)beta2, .eps = (float)eps,
                .momentum = (float)momentum},
        .lr_decay = (float)lr_decay, .seed = seed, .poll = poll_hook, .poll_interval = poll_interval,
    };
    poll_ctx pctx = {NULL, (callback && callback != Py_None) ? callback : NULL};
    cfg.poll_ctx = &pctx;
    double loss = NAN;
    den_status s;
    /* The gather already reads what it needs from `data` inputs' shapes; train without the GIL. */
    pctx.ts = PyEval_SaveThread();
    s = den_model_gather(&m, net, &g);
    if (s == DEN_OK) s = den_model_train(m, data, (int)nd, &cfg, &loss);
    if (s == DEN_OK) self->workspace_bytes = m->work_bytes;
    if (s == DEN_OK) s = den_model_scatter(m, net, 0);
    PyEval_RestoreThread(pctx.ts);
    if (anchor && anchor != self) anchor->busy = 0;
    if (coef && coef != self && coef != anchor) coef->busy = 0;
    if (s != DEN_OK) {
        raise_status(s, "train");
        goto done;
    }
    result = PyFloat_FromDouble(loss);
done:
    if (claimed) self->busy = 0;
    den_model_free(m);
    if (have_ga) gather_args_release(&ga);
    free(data);
    free(heads);
    free(head_train);
    Py_XDECREF(hold);
    Py_DECREF(seq);
    return result;
}

/* Gather for inference on one head: the units its task may use (or all with use_stamps=0). */
static den_status gather_for_head(den_model **m, const den_net *net, int h, int use_stamps, int training,
                                  const gather_args *ga) {
    den_gather g;
    memset(&g, 0, sizeof g);
    g.heads = &h;
    g.n_heads = 1;
    g.max_stamp = use_stamps ? den_head_task(&net->heads[h]) : -1;
    g.use_stamps = use_stamps;
    g.training = training;
    if (ga) {
        g.units = ga->units;
        g.inputs = ga->inputs;
    }
    return den_model_gather(m, net, &g);
}

static PyObject *Net_predict(NetObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"X", "head", "use_stamps", NULL};
    PyObject *Xo;
    int h, use_stamps = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Oi|p", kwlist, &Xo, &h, &use_stamps)) return NULL;
    if (want_head(self->net, h) < 0) return NULL;
    PyArrayObject *X = want_inputs(Xo, "X", self->net->n_input, 0);
    if (!X) return NULL;
    npy_intp dims[2] = {PyArray_DIM(X, 0), self->net->heads[h].n_out};
    PyObject *out = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (!out) return NULL;
    if (claim(self) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    den_model *m = NULL;
    den_status s;
    Py_BEGIN_ALLOW_THREADS
    s = gather_for_head(&m, self->net, h, use_stamps, 0, NULL);
    if (s == DEN_OK) s = den_model_predict(m, PyArray_DATA(X), dims[0], self->net->n_input, 0, PyArray_DATA((PyArrayObject *)out));
    den_model_free(m);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (s != DEN_OK) {
        Py_DECREF(out);
        return raise_status(s, "predict");
    }
    return out;
}

static PyObject *Net_features(NetObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"X", "head", "use_stamps", NULL};
    PyObject *Xo;
    int h, use_stamps = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Oi|p", kwlist, &Xo, &h, &use_stamps)) return NULL;
    if (want_head(self->net, h) < 0) return NULL;
    PyArrayObject *X = want_inputs(Xo, "X", self->net->n_input, 0);
    if (!X) return NULL;
    int widths[64];
    den_net_prefix(self->net, use_stamps ? den_head_task(&self->net->heads[h]) : -1, widths);
    npy_intp dims[2] = {PyArray_DIM(X, 0), widths[self->net->n_layers - 1]};
    PyObject *out = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (!out) return NULL;
    if (claim(self) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    den_model *m = NULL;
    den_status s;
    Py_BEGIN_ALLOW_THREADS
    s = gather_for_head(&m, self->net, h, use_stamps, 0, NULL);
    if (s == DEN_OK) s = den_model_features(m, PyArray_DATA(X), dims[0], self->net->n_input, 0, PyArray_DATA((PyArrayObject *)out));
    den_model_free(m);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (s != DEN_OK) {
        Py_DECREF(out);
        return raise_status(s, "features");
    }
    return out;
}

static PyObject *Net_loss(NetObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"X", "Y", "head", "use_stamps", NULL};
    PyObject *Xo, *Yo;
    int h, use_stamps = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOi|p", kwlist, &Xo, &Yo, &h, &use_stamps)) return NULL;
    if (want_head(self->net, h) < 0) return NULL;
    const den_net_layer *H = &self->net->heads[h];
    PyArrayObject *X = want_inputs(Xo, "X", self->net->n_input, 1);
    if (!X) return NULL;
    PyArrayObject *Y = want_targets(Yo, "Y", H, PyArray_DIM(X, 0));
    if (!Y) return NULL;
    den_data d = {PyArray_DATA(X), PyArray_DIM(X, 0), self->net->n_input,
                  H->kind == DEN_HEAD_SIGMOID ? PyArray_DATA(Y) : NULL, H->kind == DEN_HEAD_SOFTMAX ? PyArray_DATA(Y) : NULL, 0};
    if (claim(self) < 0) return NULL;
    den_model *m = NULL;
    double loss = NAN;
    den_status s;
    Py_BEGIN_ALLOW_THREADS
    s = gather_for_head(&m, self->net, h, use_stamps, 0, NULL);
    if (s == DEN_OK) s = den_model_loss(m, &d, &loss);
    den_model_free(m);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (s != DEN_OK) return raise_status(s, "loss");
    return PyFloat_FromDouble(loss);
}

/* A net shaped like `net` holding the gathered model's gradient buffers (Fisher values or
 * gradients) where the model's units are, and 0 everywhere else and where the mask forbids a
 * weight. */
static den_status grads_to_net(den_net **out, const den_net *net, const den_model *m) {
    DEN_TRY(den_net_clone(out, net));
    den_net *o = *out;
    for (int l = 0; l < o->n_layers + o->n_heads; l++) {
        den_net_layer *L = l < o->n_layers ? &o->layers[l] : &o->heads[l - o->n_layers];
        memset(L->W, 0, (size_t)L->n_out * (size_t)den_layer_cols(L) * sizeof(float));
        memset(L->b, 0, (size_t)L->n_out * sizeof(float));
    }
    den_status s = den_model_scatter(m, o, 1);
    for (int l = 0; s == DEN_OK && l < o->n_layers + o->n_heads; l++) {
        den_net_layer *L = l < o->n_layers ? &o->layers[l] : &o->heads[l - o->n_layers];
        int64_t n = (int64_t)L->n_out * den_layer_cols(L);
        for (int64_t i = 0; i < n; i++)
            if (!L->mask[i]) L->W[i] = 0.0f;
    }
    if (s != DEN_OK) {
        den_net_free(o);
        *out = NULL;
    }
    return s;
}

/* Shared by Net.fisher and Net.gradients: parse (X, Y, head), gather the head's task, run
 * `what` (0: gradients, 1: empirical Fisher, 2: exact Fisher) and return the result as a Net. */
static PyObject *grad_like(NetObject *self, PyObject *Xo, PyObject *Yo, int h, int what, const char *name) {
    if (want_head(self->net, h) < 0) return NULL;
    const den_net_layer *H = &self->net->heads[h];
    PyArrayObject *X = want_inputs(Xo, "X", self->net->n_input, 1);
    if (!X) return NULL;
    PyArrayObject *Y = want_targets(Yo, "Y", H, PyArray_DIM(X, 0));
    if (!Y) return NULL;
    den_data d = {PyArray_DATA(X), PyArray_DIM(X, 0), self->net->n_input,
                  H->kind == DEN_HEAD_SIGMOID ? PyArray_DATA(Y) : NULL, H->kind == DEN_HEAD_SOFTMAX ? PyArray_DATA(Y) : NULL, 0};
    if (claim(self) < 0) return NULL;
    den_model *m = NULL;
    den_net *out = NULL;
    den_status s;
    Py_BEGIN_ALLOW_THREADS
    s = gather_for_head(&m, self->net, h, 1, 1, NULL);
    if (s == DEN_OK)
        s = what == 0 ? den_model_gradients(m, &d)
                      : den_model_fisher(m, &d, what == 2 ? DEN_FISHER_EXACT : DEN_FISHER_EMPIRICAL);
    if (s == DEN_OK) s = grads_to_net(&out, self->net, m);
    den_model_free(m);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (s != DEN_OK) return raise_status(s, name);
    return (PyObject *)wrap_net(out);
}

static PyObject *Net_fisher(NetObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"X", "Y", "head", "mode", NULL};
    PyObject *Xo, *Yo;
    int h;
    const char *mode_s = "exact";
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOi|s", kwlist, &Xo, &Yo, &h, &mode_s)) return NULL;
    int what = strcmp(mode_s, "exact") == 0 ? 2 : strcmp(mode_s, "empirical") == 0 ? 1 : -1;
    if (what < 0) return PyErr_Format(PyExc_ValueError, "mode must be 'exact' or 'empirical', got '%s'", mode_s);
    return grad_like(self, Xo, Yo, h, what, "fisher");
}

static PyObject *Net_gradients(NetObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"X", "Y", "head", NULL};
    PyObject *Xo, *Yo;
    int h;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOi", kwlist, &Xo, &Yo, &h)) return NULL;
    return grad_like(self, Xo, Yo, h, 0, "gradients");
}

/* copy.deepcopy(net) and copy.copy(net) give an independent clone: models snapshot their whole
 * state with copy.deepcopy to roll back a failed or interrupted fit. */
static PyObject *Net_deepcopy(NetObject *self, PyObject *memo) {
    (void)memo;
    return Net_clone(self, NULL);
}

/* pickle support through the validated state dict (multiprocessing, joblib); den's own files
 * never use pickle. */
static PyObject *Net_reduce(NetObject *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *state = Net_get_state(self, NULL);
    if (!state) return NULL;
    PyObject *from_state = PyObject_GetAttrString((PyObject *)&NetType, "from_state");
    if (!from_state) {
        Py_DECREF(state);
        return NULL;
    }
    return Py_BuildValue("(N(N))", from_state, state);
}

static PyMethodDef Net_methods[] = {
    {"clone", (PyCFunction)Net_clone, METH_NOARGS, "clone() -> Net: an independent deep copy."},
    {"__copy__", (PyCFunction)Net_clone, METH_NOARGS, "an independent deep copy"},
    {"__deepcopy__", (PyCFunction)Net_deepcopy, METH_O, "an independent deep copy"},
    {"__reduce__", (PyCFunction)Net_reduce, METH_NOARGS, "pickle through get_state/from_state"},
    {"add_head", (PyCFunction)(void (*)(void))Net_add_head, METH_VARARGS | METH_KEYWORDS,
     "add_head(kind, k, task, seed=0) -> int: append a 'sigmoid' or 'softmax' head with k outputs for task."},
    {"add_units", (PyCFunction)(void (*)(void))Net_add_units, METH_VARARGS | METH_KEYWORDS,
     "add_units(counts, stamp, seed=0): append counts[l] units to each hidden layer, born at task `stamp`."},
    {"remove_units", (PyCFunction)(void (*)(void))Net_remove_units, METH_VARARGS | METH_KEYWORDS,
     "remove_units(keep): keep[l] is None or a bool array over layer l's units; False units are removed."},
    {"duplicate_units", (PyCFunction)(void (*)(void))Net_duplicate_units, METH_VARARGS | METH_KEYWORDS,
     "duplicate_units(dup, stamp): append a copy (incoming and outgoing weights) of each flagged unit."},
    {"restore_units", (PyCFunction)(void (*)(void))Net_restore_units, METH_VARARGS | METH_KEYWORDS,
     "restore_units(prev, which): give flagged units back their incoming weights and bias from prev."},
    {"drift", (PyCFunction)(void (*)(void))Net_drift, METH_VARARGS | METH_KEYWORDS,
     "drift(prev, layer) -> float32 array: ||w_i - w_i^prev||_2 per unit of the layer."},
    {"select", (PyCFunction)(void (*)(void))Net_select, METH_VARARGS | METH_KEYWORDS,
     "select(head) -> (units, inputs): bool flags of the subnetwork reaching the head through nonzero weights."},
    {"dead_units", (PyCFunction)(void (*)(void))Net_dead_units, METH_VARARGS | METH_KEYWORDS,
     "dead_units(layer) -> bool array: units with an all-zero incoming group or no nonzero outgoing weight."},
    {"prefix", (PyCFunction)(void (*)(void))Net_prefix, METH_VARARGS | METH_KEYWORDS,
     "prefix(task) -> tuple: units per layer that task may use (stamp <= task)."},
    {"nonzero", (PyCFunction)(void (*)(void))Net_nonzero, METH_VARARGS | METH_KEYWORDS,
     "nonzero(task=-1) -> int: nonzero parameters used by task's prediction (-1: whole model)."},
    {"get_state", (PyCFunction)Net_get_state, METH_NOARGS, "get_state() -> dict of copies of every array."},
    {"from_state", (PyCFunction)Net_from_state, METH_O | METH_CLASS, "Net.from_state(state) -> Net, fully validated."},
    {"train", (PyCFunction)(void (*)(void))Net_train, METH_VARARGS | METH_KEYWORDS,
     "train(data, epochs, batch_size, lr, optimizer='adam', units=None, train=None, inputs=None, train_heads=None,\n"
     "      head_only=False, max_stamp=-1, use_stamps=True, layer_reg=None, head_reg=None, anchor=None, coef=None,\n"
     "      lr_decay=1.0, beta1=0.9, beta2=0.999, eps=1e-8, momentum=0.0, seed=0, callback=None, poll_interval=0.1)\n"
     "-> float (mean training loss of the last epoch).\n\n"
     "One training stage in one call, without the GIL. data: [(X float32 (n, n_input), Y, head), ...], Y float32\n"
     "(n, k) targets for sigmoid heads or int32 (n,) classes for softmax ones; several entries train jointly\n"
     "(round-robin minibatches). units/inputs: per-layer bool flags of the units (and input units) to gather\n"
     "(None: all); train: flags of the gathered units that train (others are frozen); train_heads: head ids\n"
     "that train (None: all in data). layer_reg/head_reg: {'l1', 'wd', 'pull', 'group'}; pull draws weights\n"
     "toward `anchor` (an earlier clone), weighted by `coef` (a Net of per-parameter coefficients, e.g. Fisher).\n"
     "head_only: train one head on features from Net.features. callback(epoch, epochs, step, steps, loss) is\n"
     "called a few times a second; Ctrl-C or an exception in it stops training and leaves the net unchanged."},
    {"predict", (PyCFunction)(void (*)(void))Net_predict, METH_VARARGS | METH_KEYWORDS,
     "predict(X, head, use_stamps=True) -> (n, k) float32 probabilities."},
    {"features", (PyCFunction)(void (*)(void))Net_features, METH_VARARGS | METH_KEYWORDS,
     "features(X, head, use_stamps=True) -> (n, width) top hidden activations as the head's task sees them."},
    {"loss", (PyCFunction)(void (*)(void))Net_loss, METH_VARARGS | METH_KEYWORDS,
     "loss(X, Y, head, use_stamps=True) -> float: mean loss."},
    {"gradients", (PyCFunction)(void (*)(void))Net_gradients, METH_VARARGS | METH_KEYWORDS,
     "gradients(X, Y, head) -> Net shaped like this one holding d(mean loss)/d(parameters) of the head's task."},
    {"fisher", (PyCFunction)(void (*)(void))Net_fisher, METH_VARARGS | METH_KEYWORDS,
     "fisher(X, Y, head, mode='exact') -> Net shaped like this one holding the diagonal Fisher."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Net_getset[] = {
    {"n_input", (getter)Net_get_n_input, NULL, "input features", NULL},
    {"n_layers", (getter)Net_get_n_layers, NULL, "hidden layers", NULL},
    {"n_heads", (getter)Net_get_n_heads, NULL, "heads", NULL},
    {"widths", (getter)Net_get_widths, NULL, "units per hidden layer", NULL},
    {"workspace_bytes", (getter)Net_get_workspace_bytes, NULL,
     "bytes of working memory the last train() call allocated (0 before any); csrc/model.h gives the formula",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject NetType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "den._core.Net",
    .tp_basicsize = sizeof(NetObject),
    .tp_dealloc = (destructor)Net_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Net(n_input, widths, seed=0): a growable network with timestamped units and per-task heads.",
    .tp_methods = Net_methods,
    .tp_getset = Net_getset,
    .tp_new = Net_new,
};

/* ---- module functions ---------------------------------------------------------------------------- */

static PyObject *mod_set_num_threads(PyObject *m, PyObject *arg) {
    (void)m;
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 1 || n > 1024) return PyErr_Format(PyExc_ValueError, "number of threads must be in 1..1024, got %ld", n);
    den_blas_set_threads((int)n);
    Py_RETURN_NONE;
}

static PyObject *mod_get_num_threads(PyObject *m, PyObject *Py_UNUSED(ignored)) {
    (void)m;
    return PyLong_FromLong(den_blas_get_threads());
}

static PyObject *mod_blas_info(PyObject *m, PyObject *Py_UNUSED(ignored)) {
    (void)m;
    return Py_BuildValue("{sssssi}", "corename", den_blas_corename(), "config", den_blas_config(), "num_threads",
                         den_blas_get_threads());
}

/* Test hooks: the GEMM convolution and its naive reference on the same arrays, and the GEMM
 * backward, so the tests can hold them against each other and against NumPy. */
typedef struct {
    PyArrayObject *x, *Wt; /* borrowed */
    int B, C, H, W, F, kh, kw;
    float *cols, *tmp;     /* the lowering's scratch (conv.h), owned */
} conv_hook;

/* Check x (B,C,H,W), W (F, C*kh*kw) and the kernel size, and allocate the scratch. Returns 0,
 * or -1 with an exception set and nothing to free. */
static int conv_hook_start(conv_hook *c, PyObject *xo, PyObject *Wo, int kh, int kw) {
    memset(c, 0, sizeof *c);
    c->x = want_array(xo, "x", NPY_FLOAT32, 4, NULL);
    if (!c->x) return -1;
    c->B = (int)PyArray_DIM(c->x, 0), c->C = (int)PyArray_DIM(c->x, 1);
    c->H = (int)PyArray_DIM(c->x, 2), c->W = (int)PyArray_DIM(c->x, 3);
    c->kh = kh, c->kw = kw;
    if (kh < 1 || kw < 1 || kh % 2 == 0 || kw % 2 == 0) {
        PyErr_SetString(PyExc_ValueError, "kernel sizes must be odd");
        return -1;
    }
    npy_intp wshape[2] = {-1, (npy_intp)c->C * kh * kw};
    c->Wt = want_array(Wo, "W", NPY_FLOAT32, 2, wshape);
    if (!c->Wt) return -1;
    c->F = (int)PyArray_DIM(c->Wt, 0);
    int nb = den_conv_samples_per_gemm(c->B, c->C, c->H, c->W, kh, kw);
    c->cols = malloc((size_t)nb * c->C * kh * kw * c->H * c->W * sizeof(float) + 1);
    c->tmp = malloc((size_t)nb * c->F * c->H * c->W * sizeof(float) + 1);
    if (!c->cols || !c->tmp) {
        free(c->cols);
        free(c->tmp);
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void conv_hook_end(conv_hook *c) {
    free(c->cols);
    free(c->tmp);
}

static PyObject *mod_conv2d(PyObject *m, PyObject *args, PyObject *kwds) {
    (void)m;
    static char *kwlist[] = {"x", "W", "b", "kh", "kw", "naive", NULL};
    PyObject *xo, *Wo, *bo;
    int kh, kw, naive = 0;
    conv_hook c;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOii|p", kwlist, &xo, &Wo, &bo, &kh, &kw, &naive)) return NULL;
    if (conv_hook_start(&c, xo, Wo, kh, kw) < 0) return NULL;
    npy_intp bshape[1] = {c.F}, dims[4] = {c.B, c.F, c.H, c.W};
    PyArrayObject *b = want_array(bo, "b", NPY_FLOAT32, 1, bshape);
    PyObject *out = b ? PyArray_SimpleNew(4, dims, NPY_FLOAT32) : NULL;
    if (out && naive)
        den_conv_forward_naive(PyArray_DATA((PyArrayObject *)out), PyArray_DATA(c.x), PyArray_DATA(c.Wt), PyArray_DATA(b),
                               c.B, c.C, c.H, c.W, c.F, kh, kw, c.C * kh * kw);
    else if (out)
        den_conv_forward(PyArray_DATA((PyArrayObject *)out), c.cols, c.tmp, PyArray_DATA(c.x), PyArray_DATA(c.Wt),
                         PyArray_DATA(b), c.B, c.C, c.H, c.W, c.F, kh, kw, c.C * kh * kw, 0);
    conv_hook_end(&c);
    return out;
}

static PyObject *mod_conv2d_backward(PyObject *m, PyObject *args) {
    (void)m;
    PyObject *dzo, *xo, *Wo;
    int kh, kw;
    conv_hook c;
    if (!PyArg_ParseTuple(args, "OOOii", &dzo, &xo, &Wo, &kh, &kw)) return NULL;
    if (conv_hook_start(&c, xo, Wo, kh, kw) < 0) return NULL;
    npy_intp zshape[4] = {c.B, c.F, c.H, c.W}, wdims[2] = {c.F, (npy_intp)c.C * kh * kw}, bdims[1] = {c.F};
    PyArrayObject *dz = want_array(dzo, "dz", NPY_FLOAT32, 4, zshape);
    PyObject *dx = NULL, *dW = NULL, *db = NULL, *result = NULL;
    if (dz) {
        dx = PyArray_SimpleNew(4, PyArray_DIMS(c.x), NPY_FLOAT32);
        dW = PyArray_SimpleNew(2, wdims, NPY_FLOAT32);
        db = PyArray_SimpleNew(1, bdims, NPY_FLOAT32);
    }
    if (dx && dW && db) {
        den_conv_backward(PyArray_DATA((PyArrayObject *)dx), PyArray_DATA((PyArrayObject *)dW),
                          PyArray_DATA((PyArrayObject *)db), c.cols, c.tmp, PyArray_DATA(dz), PyArray_DATA(c.x),
                          PyArray_DATA(c.Wt), c.B, c.C, c.H, c.W, c.F, kh, kw, c.C * kh * kw);
        result = PyTuple_Pack(3, dx, dW, db);
    }
    Py_XDECREF(dx);
    Py_XDECREF(dW);
    Py_XDECREF(db);
    conv_hook_end(&c);
    return result;
}

static PyMethodDef module_methods[] = {
    {"_conv2d", (PyCFunction)(void (*)(void))mod_conv2d, METH_VARARGS | METH_KEYWORDS,
     "_conv2d(x (B,C,H,W), W (F, C*kh*kw), b (F,), kh, kw, naive=False) -> (B,F,H,W): test hook"},
    {"_conv2d_backward", mod_conv2d_backward, METH_VARARGS,
     "_conv2d_backward(dz (B,F,H,W), x (B,C,H,W), W (F, C*kh*kw), kh, kw) -> (dx, dW, db): test hook"},
    {"set_num_threads", mod_set_num_threads, METH_O, "set_num_threads(n): threads of the BLAS pool den uses."},
    {"get_num_threads", mod_get_num_threads, METH_NOARGS, "get_num_threads() -> int"},
    {"blas_info", mod_blas_info, METH_NOARGS, "blas_info() -> dict(corename, config, num_threads)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "den._core", "The C core of den (see csrc/).", -1, module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core(void) {
    import_array();
    if (PyType_Ready(&NetType) < 0) return NULL;
    PyObject *m = PyModule_Create(&core_module);
    if (!m) return NULL;
    Py_INCREF(&NetType);
    if (PyModule_AddObject(m, "Net", (PyObject *)&NetType) < 0) {
        Py_DECREF(&NetType);
        Py_DECREF(m);
        return NULL;
    }
    /* the im2col budget (conv.h), for the working-memory formula in benchmarks/cnn_throughput.py */
    if (PyModule_AddIntConstant(m, "CONV_COLS_FLOATS", DEN_CONV_COLS_FLOATS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
