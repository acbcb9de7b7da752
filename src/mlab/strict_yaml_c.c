/*
 * mlab_yamlc: the common case of mlab.strict_yaml.load_strict, in C over libyaml.
 *
 * Built into the project virtualenv by scripts/setup.d/11-compiled-loader.sh (gcc, libyaml),
 * stamped with the sha256 of this file (SOURCE_SHA256); mlab.strict_yaml uses it only while
 * the stamp matches. Why: reading a 10,000-user site file through PyYAML's binding makes a
 * Python event and node object per YAML node (0.55 s of CPU, the largest serial part of
 * `mlab render`, issue 18); here libyaml's events become dicts, lists and strings directly.
 *
 * Contract: load(utf8_bytes, plain, special) returns exactly what load_strict returns for
 * the same text, or raises Unsupported, and then the caller runs load_strict itself (which
 * reports errors with their line and column). It handles block and flow mappings and
 * sequences and untagged scalars without anchors; everything else is Unsupported: a syntax
 * error, a key given twice, an anchor or alias, an explicit tag (even "!"), a key that is not
 * a string (a merge key "<<" included), more than one document, nesting deeper than
 * MAX_DEPTH. Scalars follow PyYAML's rules: a quoted or block scalar is a str; a plain one
 * whose first byte is not in ``special`` (the first characters of the resolver's implicit
 * types, a bytes of 256 flags) is a str too; any other plain scalar is ``plain(value)``
 * (PyYAML's resolver and SafeConstructor, see mlab.strict_yaml).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <yaml.h>

#ifndef SOURCE_SHA256
#define SOURCE_SHA256 ""
#endif

#define MAX_DEPTH 500

static PyObject *Unsupported;

typedef struct {
    yaml_parser_t parser;
    PyObject *plain;
    const char *special; /* 256 flags */
} Ctx;

static PyObject *unsupported(const char *why) {
    PyErr_SetString(Unsupported, why);
    return NULL;
}

/* The next event into ev; -1 with Unsupported set on a syntax error. */
static int next_event(Ctx *c, yaml_event_t *ev) {
    if (!yaml_parser_parse(&c->parser, ev)) {
        unsupported("syntax error");
        return -1;
    }
    return 0;
}

static PyObject *node(Ctx *c, yaml_event_t *ev, int depth);

static int untagged(const yaml_char_t *tag, const yaml_char_t *anchor) {
    return tag == NULL && anchor == NULL;
}

static PyObject *scalar(Ctx *c, yaml_event_t *ev, int key) {
    if (!untagged(ev->data.scalar.tag, ev->data.scalar.anchor))
        return unsupported("tag or anchor");
    const char *value = (const char *)ev->data.scalar.value;
    size_t length = ev->data.scalar.length;
    PyObject *text = PyUnicode_DecodeUTF8(value, (Py_ssize_t)length, "strict");
    if (text == NULL) {
        PyErr_Clear();
        return unsupported("not UTF-8");
    }
    if (!ev->data.scalar.plain_implicit)
        return text; /* quoted, literal or folded: a str */
    if (length > 0 && !c->special[(unsigned char)value[0]])
        return text;
    PyObject *out = PyObject_CallOneArg(c->plain, text);
    Py_DECREF(text);
    if (out == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return NULL; /* KeyboardInterrupt, SystemExit: not the document's fault */
        PyErr_Clear();
        return unsupported("scalar PyYAML refuses");
    }
    if (key && !PyUnicode_CheckExact(out)) {
        Py_DECREF(out);
        return unsupported("key that is not a string");
    }
    return out;
}

static PyObject *mapping(Ctx *c, yaml_event_t *start, int depth) {
    if (!untagged(start->data.mapping_start.tag, start->data.mapping_start.anchor))
        return unsupported("tag or anchor");
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    for (;;) {
        yaml_event_t ev;
        if (next_event(c, &ev) < 0)
            goto fail;
        if (ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            return out;
        }
        if (ev.type != YAML_SCALAR_EVENT) {
            yaml_event_delete(&ev);
            unsupported("key that is not a scalar");
            goto fail;
        }
        PyObject *key = scalar(c, &ev, 1);
        yaml_event_delete(&ev);
        if (key == NULL)
            goto fail;
        int seen = PyDict_Contains(out, key);
        if (seen != 0) {
            Py_DECREF(key);
            if (seen > 0)
                unsupported("key given twice");
            goto fail;
        }
        if (next_event(c, &ev) < 0) {
            Py_DECREF(key);
            goto fail;
        }
        PyObject *value = node(c, &ev, depth + 1);
        yaml_event_delete(&ev);
        if (value == NULL) {
            Py_DECREF(key);
            goto fail;
        }
        int failed = PyDict_SetItem(out, key, value);
        Py_DECREF(key);
        Py_DECREF(value);
        if (failed)
            goto fail;
    }
fail:
    Py_DECREF(out);
    return NULL;
}

static PyObject *sequence(Ctx *c, yaml_event_t *start, int depth) {
    if (!untagged(start->data.sequence_start.tag, start->data.sequence_start.anchor))
        return unsupported("tag or anchor");
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (;;) {
        yaml_event_t ev;
        if (next_event(c, &ev) < 0)
            goto fail;
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            return out;
        }
        PyObject *item = node(c, &ev, depth + 1);
        yaml_event_delete(&ev);
        if (item == NULL)
            goto fail;
        int failed = PyList_Append(out, item);
        Py_DECREF(item);
        if (failed)
            goto fail;
    }
fail:
    Py_DECREF(out);
    return NULL;
}

/* The object of the node that event ev starts (ev stays the caller's to delete). */
static PyObject *node(Ctx *c, yaml_event_t *ev, int depth) {
    if (depth > MAX_DEPTH)
        return unsupported("nested too deep");
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        return scalar(c, ev, 0);
    case YAML_MAPPING_START_EVENT:
        return mapping(c, ev, depth);
    case YAML_SEQUENCE_START_EVENT:
        return sequence(c, ev, depth);
    default:
        return unsupported("alias");
    }
}

/* Expect the next event to be of type want; -1 with Unsupported set otherwise. */
static int expect(Ctx *c, yaml_event_type_t want) {
    yaml_event_t ev;
    if (next_event(c, &ev) < 0)
        return -1;
    yaml_event_type_t got = ev.type;
    yaml_event_delete(&ev);
    if (got != want) {
        unsupported("not a single document");
        return -1;
    }
    return 0;
}

static PyObject *document(Ctx *c) {
    yaml_event_t ev;
    if (expect(c, YAML_STREAM_START_EVENT) < 0 || next_event(c, &ev) < 0)
        return NULL;
    if (ev.type == YAML_STREAM_END_EVENT) {
        yaml_event_delete(&ev);
        Py_RETURN_NONE; /* an empty stream */
    }
    yaml_event_type_t got = ev.type;
    yaml_event_delete(&ev);
    if (got != YAML_DOCUMENT_START_EVENT)
        return unsupported("not a document");
    if (next_event(c, &ev) < 0)
        return NULL;
    PyObject *out = node(c, &ev, 0);
    yaml_event_delete(&ev);
    if (out == NULL)
        return NULL;
    if (expect(c, YAML_DOCUMENT_END_EVENT) < 0 || expect(c, YAML_STREAM_END_EVENT) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

static PyObject *load(PyObject *self, PyObject *args) {
    const char *data;
    Py_ssize_t size;
    PyObject *plain;
    const char *special;
    Py_ssize_t special_size;
    (void)self;
    if (!PyArg_ParseTuple(args, "y#Oy#:load", &data, &size, &plain, &special, &special_size))
        return NULL;
    if (special_size != 256) {
        PyErr_SetString(PyExc_ValueError, "special must be 256 bytes");
        return NULL;
    }
    Ctx c;
    if (!yaml_parser_initialize(&c.parser))
        return PyErr_NoMemory();
    c.plain = plain;
    c.special = special;
    yaml_parser_set_input_string(&c.parser, (const unsigned char *)data, (size_t)size);
    yaml_parser_set_encoding(&c.parser, YAML_UTF8_ENCODING);
    PyObject *out = document(&c);
    yaml_parser_delete(&c.parser);
    return out;
}

static PyMethodDef methods[] = {
    {"load", load, METH_VARARGS,
     "load(utf8: bytes, plain, special: bytes) -> object; raises Unsupported."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "mlab_yamlc",
    "The common case of mlab.strict_yaml.load_strict in C (see strict_yaml_c.c).", -1, methods,
};

PyMODINIT_FUNC PyInit_mlab_yamlc(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Unsupported = PyErr_NewException("mlab_yamlc.Unsupported", PyExc_Exception, NULL);
    if (Unsupported == NULL || PyModule_AddObjectRef(m, "Unsupported", Unsupported) < 0 ||
        PyModule_AddStringConstant(m, "SOURCE_SHA256", SOURCE_SHA256) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
