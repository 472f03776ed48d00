/* worker.batch's decode and encode in C for the common record: the per-record Python loop around orjson
 * and the contract's fast checks, and a result event's JSON without a per-record dict.
 *
 * decode(values, loads, decode_errors, required, optional_strings, timestamps, seen_timestamps, seconds)
 *   values: list of bytes | None; loads: orjson.loads; decode_errors: the exception types that make a
 *   value a suspect (orjson.JSONDecodeError, TypeError); required, optional_strings, timestamps: the
 *   contract's fields (schemas.field_checks, derived from Mention); seen_timestamps: the
 *   TimestampParser's dict of timestamp strings already parsed; seconds: its parse method (str -> float
 *   | None), called for a timestamp not in that dict.
 * -> (index, documents, suspects), in order. A value is valid when loads gives a dict whose required
 *   fields are str with something besides whitespace (str.isspace) and no longer than their limit (-1:
 *   none), each optional string absent, None or a str, and each timestamp absent, None, or a str that is
 *   in seen_timestamps or that seconds() parses. Anything else is a suspect, judged by the contract
 *   (pydantic) in Python. Any other exception from loads or seconds propagates.
 *
 * encode(documents, scores_json, label_ids, labels, model_json, processed_at_json, known)
 *   documents: list of dicts (decoded mentions, already checked against the contract);
 *   scores_json: bytes, orjson's JSON of the (n, 3) probabilities (negative, neutral, positive):
 *     "[[a,b,c],[a,b,c],...]". Floats are spliced from it as orjson wrote them: formatting them here with
 *     Python's repr (dtoa) cost more than the whole Python encoder;
 *   label_ids: a C-contiguous int64 buffer of shape (n,), each 0..2;
 *   labels: tuple of the 3 label names (str); model_json, processed_at_json: bytes, already JSON;
 *   known: frozenset of the contract's field names.
 * -> list[bytes | None], one per document: the exact fields and order of the Python encoder
 *   ({"id", "label", "score", "scores": {...}, "model", "brand", "source", "created_at", "processed_at"}),
 *   compact, strings escaped as orjson escapes them ('"', '\\' and the controls below 0x20): the bytes
 *   orjson writes for the same dict. None where this code leaves the record to Python: a field outside
 *   the contract (carried through), a value that is not a str or None, a str that is not valid UTF-8 (a
 *   lone surrogate), a score that is not finite (orjson wrote null).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef struct {
    char *data;
    Py_ssize_t size;
    Py_ssize_t capacity;
} Buffer;

static int buffer_reserve(Buffer *b, Py_ssize_t extra) {
    if (b->size + extra <= b->capacity) return 0;
    Py_ssize_t capacity = b->capacity ? b->capacity : 512;
    while (capacity < b->size + extra) capacity *= 2;
    char *data = PyMem_Realloc(b->data, (size_t)capacity);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->capacity = capacity;
    return 0;
}

static int buffer_add(Buffer *b, const char *text, Py_ssize_t size) {
    if (buffer_reserve(b, size) < 0) return -1;
    memcpy(b->data + b->size, text, (size_t)size);
    b->size += size;
    return 0;
}

#define ADD_LITERAL(b, s) buffer_add((b), (s), (Py_ssize_t)(sizeof(s) - 1))

/* A JSON string of `value` (a str). 1: written; 0: leave the record to Python; -1: error set. */
static int add_string(Buffer *b, PyObject *value) {
    Py_ssize_t size;
    const char *text = PyUnicode_AsUTF8AndSize(value, &size);
    if (text == NULL) { /* a lone surrogate: Python's encoder raises the error the caller expects */
        PyErr_Clear();
        return 0;
    }
    if (buffer_reserve(b, size * 6 + 2) < 0) return -1; /* "\u00XX" is the longest escape */
    static const char hex[] = "0123456789abcdef";
    char *out = b->data + b->size;
    *out++ = '"';
    for (Py_ssize_t i = 0; i < size; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *out++ = (char)c;
            continue;
        }
        *out++ = '\\';
        switch (c) {
            case '"': *out++ = '"'; break;
            case '\\': *out++ = '\\'; break;
            case '\b': *out++ = 'b'; break;
            case '\f': *out++ = 'f'; break;
            case '\n': *out++ = 'n'; break;
            case '\r': *out++ = 'r'; break;
            case '\t': *out++ = 't'; break;
            default:
                *out++ = 'u';
                *out++ = '0';
                *out++ = '0';
                *out++ = hex[c >> 4];
                *out++ = hex[c & 15];
        }
    }
    *out++ = '"';
    b->size = out - b->data;
    return 1;
}

/* An optional field: absent or None -> null, a str -> its JSON string, anything else -> 0 (Python). */
static int add_optional(Buffer *b, PyObject *doc, PyObject *name) {
    PyObject *value = PyDict_GetItemWithError(doc, name);
    if (value == NULL && PyErr_Occurred()) return -1;
    if (value == NULL || value == Py_None) return ADD_LITERAL(b, "null") < 0 ? -1 : 1;
    if (!PyUnicode_CheckExact(value)) return 0;
    return add_string(b, value);
}

typedef struct {
    const char *text;
    Py_ssize_t size;
} Span;

/* The spans of the 3 numbers of each row of "[[a,b,c],...]" (n rows). -1 with ValueError if malformed. */
static int score_spans(const char *text, Py_ssize_t size, Py_ssize_t n, Span *spans) {
    Py_ssize_t i = 0, count = 0;
    if (size < 2 || text[0] != '[') goto malformed;
    i = 1;
    for (Py_ssize_t row = 0; row < n; row++) {
        if (row > 0) {
            if (i >= size || text[i] != ',') goto malformed;
            i++;
        }
        if (i >= size || text[i] != '[') goto malformed;
        i++;
        for (int column = 0; column < 3; column++) {
            Py_ssize_t start = i;
            while (i < size && text[i] != ',' && text[i] != ']') i++;
            if (i >= size || i == start || text[i] != (column < 2 ? ',' : ']')) goto malformed;
            spans[count].text = text + start;
            spans[count].size = i - start;
            count++;
            i++;
        }
    }
    if (i != size - 1 || text[i] != ']') goto malformed;
    return 0;
malformed:
    PyErr_SetString(PyExc_ValueError, "scores_json must be orjson's JSON of an (n, 3) float array");
    return -1;
}

static int is_null(const Span *span) { return span->size == 4 && memcmp(span->text, "null", 4) == 0; }

typedef struct {
    PyObject *id, *brand, *source, *created_at; /* interned field names */
    PyObject *known;
    const char *labels[3];
    Py_ssize_t label_sizes[3];
    const char *model;
    Py_ssize_t model_size;
    const char *processed_at;
    Py_ssize_t processed_at_size;
} Context;

/* One result into `b` (reset first). 1: written; 0: leave to Python; -1: error set. */
static int encode_one(Buffer *b, const Context *ctx, PyObject *doc, const Span *row, long long label) {
    b->size = 0;
    if (!PyDict_CheckExact(doc) || label < 0 || label > 2) return 0;
    Py_ssize_t position = 0;
    PyObject *key, *value;
    while (PyDict_Next(doc, &position, &key, &value)) {
        int found = PySet_Contains(ctx->known, key);
        if (found < 0) return -1;
        if (!found) return 0; /* a field outside the contract is carried through: Python's path */
    }
    if (is_null(&row[0]) || is_null(&row[1]) || is_null(&row[2])) return 0; /* not finite */
    PyObject *id = PyDict_GetItemWithError(doc, ctx->id);
    if (id == NULL) return PyErr_Occurred() ? -1 : 0;
    if (!PyUnicode_CheckExact(id)) return 0;
    int status;
    if (ADD_LITERAL(b, "{\"id\":") < 0) return -1;
    if ((status = add_string(b, id)) != 1) return status;
    if (ADD_LITERAL(b, ",\"label\":\"") < 0) return -1;
    if (buffer_add(b, ctx->labels[label], ctx->label_sizes[label]) < 0) return -1;
    if (ADD_LITERAL(b, "\",\"score\":") < 0 || buffer_add(b, row[label].text, row[label].size) < 0) return -1;
    if (ADD_LITERAL(b, ",\"scores\":{\"negative\":") < 0 || buffer_add(b, row[0].text, row[0].size) < 0)
        return -1;
    if (ADD_LITERAL(b, ",\"neutral\":") < 0 || buffer_add(b, row[1].text, row[1].size) < 0) return -1;
    if (ADD_LITERAL(b, ",\"positive\":") < 0 || buffer_add(b, row[2].text, row[2].size) < 0) return -1;
    if (ADD_LITERAL(b, "},\"model\":") < 0) return -1;
    if (buffer_add(b, ctx->model, ctx->model_size) < 0) return -1;
    if (ADD_LITERAL(b, ",\"brand\":") < 0) return -1;
    if ((status = add_optional(b, doc, ctx->brand)) != 1) return status;
    if (ADD_LITERAL(b, ",\"source\":") < 0) return -1;
    if ((status = add_optional(b, doc, ctx->source)) != 1) return status;
    if (ADD_LITERAL(b, ",\"created_at\":") < 0) return -1;
    if ((status = add_optional(b, doc, ctx->created_at)) != 1) return status;
    if (ADD_LITERAL(b, ",\"processed_at\":") < 0) return -1;
    if (buffer_add(b, ctx->processed_at, ctx->processed_at_size) < 0) return -1;
    if (ADD_LITERAL(b, "}") < 0) return -1;
    return 1;
}

static int label_names(PyObject *labels, Context *ctx) {
    if (!PyTuple_Check(labels) || PyTuple_GET_SIZE(labels) != 3) {
        PyErr_SetString(PyExc_ValueError, "labels must be a tuple of 3 str");
        return -1;
    }
    for (int i = 0; i < 3; i++) {
        PyObject *name = PyTuple_GET_ITEM(labels, i);
        if (!PyUnicode_Check(name) || !PyUnicode_IS_ASCII(name)) {
            PyErr_SetString(PyExc_ValueError, "labels must be ASCII str");
            return -1;
        }
        ctx->labels[i] = PyUnicode_AsUTF8AndSize(name, &ctx->label_sizes[i]);
        if (ctx->labels[i] == NULL) return -1;
        for (Py_ssize_t j = 0; j < ctx->label_sizes[i]; j++) {
            char c = ctx->labels[i][j];
            if (c < 0x20 || c == '"' || c == '\\') {
                PyErr_SetString(PyExc_ValueError, "labels must need no JSON escape");
                return -1;
            }
        }
    }
    return 0;
}

static PyObject *fastbatch_encode(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *documents, *scores_json, *label_ids, *labels, *model_json, *processed_at_json, *known;
    if (!PyArg_ParseTuple(args, "O!SOOSSO!:encode", &PyList_Type, &documents, &scores_json, &label_ids,
                          &labels, &model_json, &processed_at_json, &PyFrozenSet_Type, &known))
        return NULL;
    Context ctx = {0};
    if (label_names(labels, &ctx) < 0) return NULL;
    ctx.known = known;
    ctx.model = PyBytes_AS_STRING(model_json);
    ctx.model_size = PyBytes_GET_SIZE(model_json);
    ctx.processed_at = PyBytes_AS_STRING(processed_at_json);
    ctx.processed_at_size = PyBytes_GET_SIZE(processed_at_json);
    ctx.id = PyUnicode_InternFromString("id");
    ctx.brand = PyUnicode_InternFromString("brand");
    ctx.source = PyUnicode_InternFromString("source");
    ctx.created_at = PyUnicode_InternFromString("created_at");
    Py_buffer ids = {0};
    Buffer b = {0};
    Span *spans = NULL;
    PyObject *out = NULL;
    if (!ctx.id || !ctx.brand || !ctx.source || !ctx.created_at) goto done;
    if (PyObject_GetBuffer(label_ids, &ids, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) goto done;
    Py_ssize_t n = PyList_GET_SIZE(documents);
    spans = PyMem_Malloc(sizeof(Span) * (size_t)(3 * n + 1));
    if (spans == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (score_spans(PyBytes_AS_STRING(scores_json), PyBytes_GET_SIZE(scores_json), n, spans) < 0) goto done;
    if (ids.ndim != 1 || ids.itemsize != 8 || strchr("lq", ids.format[0]) == NULL || ids.format[1] != 0 ||
        ids.shape[0] != n) {
        PyErr_SetString(PyExc_ValueError, "label_ids must be int64 of shape (len(documents),)");
        goto done;
    }
    out = PyList_New(n);
    if (out == NULL) goto done;
    const long long *label = ids.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        int status = encode_one(&b, &ctx, PyList_GET_ITEM(documents, i), spans + 3 * i, label[i]);
        PyObject *item;
        if (status < 0) {
            Py_CLEAR(out);
            goto done;
        }
        if (status == 0) {
            item = Py_NewRef(Py_None);
        } else {
            item = PyBytes_FromStringAndSize(b.data, b.size);
            if (item == NULL) {
                Py_CLEAR(out);
                goto done;
            }
        }
        PyList_SET_ITEM(out, i, item);
    }
done:
    PyMem_Free(b.data);
    PyMem_Free(spans);
    if (ids.obj) PyBuffer_Release(&ids);
    Py_XDECREF(ctx.id);
    Py_XDECREF(ctx.brand);
    Py_XDECREF(ctx.source);
    Py_XDECREF(ctx.created_at);
    return out;
}

/* 1 when `value` is a str with a character that is not whitespace (Python: `value.strip() != ""`). */
static int has_content(PyObject *value) {
    int kind = PyUnicode_KIND(value);
    const void *data = PyUnicode_DATA(value);
    Py_ssize_t length = PyUnicode_GET_LENGTH(value);
    for (Py_ssize_t i = 0; i < length; i++)
        if (!Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, i))) return 1;
    return 0;
}

typedef struct {
    PyObject *required;   /* tuple of (name, max length or -1) */
    PyObject *optional;   /* tuple of str */
    PyObject *timestamps; /* tuple of str */
    PyObject *seen;       /* dict */
    PyObject *seconds;    /* callable */
} Checks;

/* A timestamp field's value passes: absent, None, or a str seen before or that seconds() parses.
 * 1 yes, 0 no, -1 error set. */
static int timestamp_passes(PyObject *value, const Checks *checks) {
    if (value == NULL || value == Py_None) return 1;
    if (!PyUnicode_CheckExact(value)) return 0;
    PyObject *cached = PyDict_GetItemWithError(checks->seen, value);
    if (cached != NULL && cached != Py_None) return 1;
    if (PyErr_Occurred()) return -1;
    PyObject *parsed = PyObject_CallOneArg(checks->seconds, value);
    if (parsed == NULL) return -1;
    int valid = parsed != Py_None;
    Py_DECREF(parsed);
    return valid;
}

/* Whether `doc` certainly passes the contract (schemas.field_checks). 1 yes, 0 no, -1 error set. */
static int conforms(PyObject *doc, const Checks *checks) {
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(checks->required); i++) {
        PyObject *pair = PyTuple_GET_ITEM(checks->required, i);
        PyObject *value = PyDict_GetItemWithError(doc, PyTuple_GET_ITEM(pair, 0));
        if (value == NULL) return PyErr_Occurred() ? -1 : 0;
        if (!PyUnicode_CheckExact(value)) return 0;
        Py_ssize_t limit = PyLong_AsSsize_t(PyTuple_GET_ITEM(pair, 1));
        if (limit >= 0 && PyUnicode_GET_LENGTH(value) > limit) return 0;
        if (!has_content(value)) return 0;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(checks->optional); i++) {
        PyObject *value = PyDict_GetItemWithError(doc, PyTuple_GET_ITEM(checks->optional, i));
        if (value == NULL && PyErr_Occurred()) return -1;
        if (value != NULL && value != Py_None && !PyUnicode_CheckExact(value)) return 0;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(checks->timestamps); i++) {
        PyObject *value = PyDict_GetItemWithError(doc, PyTuple_GET_ITEM(checks->timestamps, i));
        if (value == NULL && PyErr_Occurred()) return -1;
        int valid = timestamp_passes(value, checks);
        if (valid != 1) return valid;
    }
    return 1;
}

/* A tuple of str; 0, or -1 with TypeError naming `what`. */
static int check_names(PyObject *names, const char *what) {
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        if (!PyUnicode_Check(PyTuple_GET_ITEM(names, i))) {
            PyErr_Format(PyExc_TypeError, "%s must be a tuple of str", what);
            return -1;
        }
    }
    return 0;
}

static int append_index(PyObject *list, Py_ssize_t i) {
    PyObject *number = PyLong_FromSsize_t(i);
    if (number == NULL) return -1;
    int status = PyList_Append(list, number);
    Py_DECREF(number);
    return status;
}

static PyObject *fastbatch_decode(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *values, *loads, *errors;
    Checks checks = {0};
    if (!PyArg_ParseTuple(args, "O!OOO!O!O!O!O:decode", &PyList_Type, &values, &loads, &errors, &PyTuple_Type,
                          &checks.required, &PyTuple_Type, &checks.optional, &PyTuple_Type, &checks.timestamps,
                          &PyDict_Type, &checks.seen, &checks.seconds))
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(checks.required); i++) {
        PyObject *pair = PyTuple_GET_ITEM(checks.required, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 || !PyUnicode_Check(PyTuple_GET_ITEM(pair, 0)) ||
            !PyLong_Check(PyTuple_GET_ITEM(pair, 1))) {
            PyErr_SetString(PyExc_TypeError, "required must be a tuple of (str, int) pairs");
            return NULL;
        }
    }
    if (check_names(checks.optional, "optional_strings") < 0 || check_names(checks.timestamps, "timestamps") < 0)
        return NULL;
    PyObject *index = PyList_New(0), *documents = PyList_New(0), *suspects = PyList_New(0);
    PyObject *result = NULL;
    if (!index || !documents || !suspects) goto done;
    Py_ssize_t n = PyList_GET_SIZE(values);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *doc = PyObject_CallOneArg(loads, PyList_GET_ITEM(values, i));
        if (doc == NULL) {
            if (!PyErr_ExceptionMatches(errors)) goto done;
            PyErr_Clear();
            if (append_index(suspects, i) < 0) goto done;
            continue;
        }
        int valid = PyDict_CheckExact(doc) ? conforms(doc, &checks) : 0;
        if (valid < 0) {
            Py_DECREF(doc);
            goto done;
        }
        int status = valid ? (append_index(index, i) < 0 || PyList_Append(documents, doc) < 0 ? -1 : 0)
                           : append_index(suspects, i);
        Py_DECREF(doc);
        if (status < 0) goto done;
    }
    result = PyTuple_Pack(3, index, documents, suspects);
done:
    Py_XDECREF(index);
    Py_XDECREF(documents);
    Py_XDECREF(suspects);
    return result;
}

static PyMethodDef fastbatch_methods[] = {
    {"decode", fastbatch_decode, METH_VARARGS,
     "decode(values, loads, decode_errors, required, optional_strings, timestamps, seen_timestamps, seconds) -> "
     "(index, documents, suspects): the valid records and the ones the contract must judge."},
    {"encode", fastbatch_encode, METH_VARARGS,
     "encode(documents, scores_json, label_ids, labels, model_json, processed_at_json, known) -> "
     "list[bytes | None]: each document's result JSON, or None where Python must encode it."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastbatch_module = {
    PyModuleDef_HEAD_INIT, "_fastbatch", "worker.batch decode and encode for the common record, in C.", -1,
    fastbatch_methods,
};

PyMODINIT_FUNC PyInit__fastbatch(void) { return PyModule_Create(&fastbatch_module); }
