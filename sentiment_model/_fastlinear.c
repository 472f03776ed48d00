/* The tokeniser and scorer of sentiment_model.linear_scorer: tokenise, hash, look up and sum rows.
 *
 * Semantics are fastText's (dictionary.cc getLine/addWordNgrams, model.cc computeHidden): a line is cut at
 * its first newline or literal "</s>" token, split on fastText's separators (space \t \v \f \r \0), then
 * "</s>" is appended; a token found in the vocabulary is a word (its row) or a label (nothing); an
 * unknown token starting with "__label__" is a label; any other unknown token adds no row but its hash
 * (fastText's: FNV-1a over the bytes read as signed chars) feeds the word n-grams
 * h = h * 116049371 + next over the sign-extended hashes, % bucket, through the prune index. Rows are
 * added in float32 in fastText's order, starting from zero: the words in token order, then the n-grams
 * (i, i+1), (i, i+2), ... by i. No -ffast-math: the order is the result. The tests hold it to fastText.
 *
 * Kernel(keys, codes, word_ngrams, bucket, nwords, bucket_rows, table, dim)
 *   keys: list of bytes (words then labels), codes: list of int (word id, or < 0 for a label; a later
 *   duplicate key replaces an earlier one), bucket_rows: int32 buffer of `bucket` entries (-1: pruned)
 *   or None (row = nwords + bucket), table: C-contiguous float32 buffer of rows x dim.
 * Kernel.sum_rows(lines, sums, counts[, words[, tokens]]) -> bool | bytes
 *   lines: sequence of str (or bytes: a str without a UTF-8 form, encoded by the caller); sums: writable
 *   float32 buffer of len(lines) * dim; counts: writable int64 buffer of len(lines). False (buffers
 *   untouched or partly written) when a str line has no UTF-8 form (a lone surrogate). The loop runs
 *   without the GIL. words (optional, writable int64 buffer of len(lines)): each line's number of word
 *   rows ("</s>" included, unknown words and labels left out), and the result is those rows as int64
 *   bytes, line after line in token order. tokens (optional, int64 of len(lines)): each line's number
 *   of tokens that are not labels ("</s>" included).
 * Kernel.explain_rows(line) -> (rows, firsts, lengths, tokens)
 *   One line's rows in fastText's order, each row's first token and number of tokens (1: a word, n: a
 *   word n-gram), and the line's tokens that are not labels, as bytes ("</s>" last).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define FNV_OFFSET 2166136261u
#define FNV_PRIME 16777619u
#define NGRAM_MULTIPLIER 116049371ull
#define LABEL_PREFIX "__label__"
#define LABEL_PREFIX_LEN 9
#define CODE_LABEL (-2)
#define CODE_MISSING (-1)

/* One vocabulary slot, 16 bytes (a 32-byte slot with 16 key bytes inline was slower: the table is
 * read at random and its size is what costs). A key of up to 8 bytes (most tokens) is compared
 * without leaving the slot; a longer one also compares its tail through `tails`. */
typedef struct {
    uint64_t head; /* the key's first 8 bytes, zero-padded (keys never hold a zero byte) */
    uint32_t tag;  /* FNV-1a of the key, low byte replaced by min(length, 255); 0: empty slot */
    int32_t code;  /* word id, or CODE_LABEL */
} Slot;

typedef struct {
    uint32_t start;  /* the key is blob[start : start + length] */
    uint32_t length;
} Tail;

/* 64 buckets of a prune index whose rows are nwords + the rank of the kept bucket: kept bits, and the
 * number of kept buckets before these 64. */
typedef struct {
    uint64_t kept;
    uint64_t before;
} RankWord;

typedef struct {
    PyObject_HEAD
    char *blob;       /* every key's bytes, back to back */
    Slot *slots;      /* open addressing, linear probing, load <= 2/3 */
    Tail *tails;      /* per slot */
    uint64_t mask;
    int word_ngrams;
    uint64_t bucket;
    int64_t nwords;
    int64_t nrows;
    Py_ssize_t dim;
    RankWord *ranks;  /* a pruned file's bucket -> row map, 1/16 the size of bucket_rows (else NULL) */
    float *own_rows;  /* the table with the kept buckets' rows in bucket order, when the file's are not */
    const float *rows; /* the rows read: own_rows or the table */
    Py_buffer table;  /* float32 rows x dim */
    int32_t eos_code; /* code of "</s>" (CODE_MISSING if not a key) */
    uint32_t eos_hash;
} Kernel;


/* fastText's dictionary hash: FNV-1a over the bytes read as signed chars (not the standard FNV-1a). */
static inline uint32_t fasttext_hash(const char *data, Py_ssize_t length) {
    uint32_t h = FNV_OFFSET;
    for (Py_ssize_t i = 0; i < length; i++) {
        h ^= (uint32_t)(int32_t)(signed char)data[i];
        h *= FNV_PRIME;
    }
    return h;
}

/* Set bits of x. (__builtin_popcountll is a library call without -mpopcnt, which the default x86-64
 * build does not assume: 2% of the loop.) */
static inline uint64_t bit_count(uint64_t x) {
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0Full;
    return (x * 0x0101010101010101ull) >> 56;
}

static inline uint64_t home(const Kernel *k, uint32_t hash) {
    return (((uint64_t)hash * 0x9E3779B97F4A7C15ull) >> 20) & k->mask;
}

static inline uint64_t key_head(const char *data, Py_ssize_t length) {
    uint64_t head = 0;
    memcpy(&head, data, (size_t)(length < 8 ? length : 8));
    return head;
}

static inline uint32_t key_tag(uint32_t hash, Py_ssize_t length) {
    return (hash & 0xFFFFFF00u) | (uint32_t)(length < 255 ? length : 255);
}

/* The slot holding the key (length >= 1, first 8 bytes `head`), or the empty slot where it would go. */
static inline Slot *find_slot_head(const Kernel *k, const char *token, Py_ssize_t length, uint32_t hash,
                                   uint64_t head) {
    const uint32_t tag = key_tag(hash, length);
    uint64_t at = home(k, hash);
    for (;;) {
        Slot *slot = &k->slots[at];
        if (slot->tag == 0) return slot;
        if (slot->tag == tag && slot->head == head &&
            (length <= 8 || (k->tails[at].length == (uint32_t)length &&
                             memcmp(k->blob + k->tails[at].start + 8, token + 8, (size_t)length - 8) == 0)))
            return slot;
        at = (at + 1) & k->mask;
    }
}

static inline Slot *find_slot(const Kernel *k, const char *token, Py_ssize_t length, uint32_t hash) {
    return find_slot_head(k, token, length, hash, key_head(token, length));
}

static void Kernel_dealloc(Kernel *self) {
    PyMem_Free(self->blob);
    PyMem_Free(self->slots);
    PyMem_Free(self->tails);
    PyMem_Free(self->ranks);
    PyMem_Free(self->own_rows);
    if (self->table.obj != NULL) PyBuffer_Release(&self->table);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The rank map (and, when the file's kept rows are not in bucket order, own_rows) of a bucket -> row
 * map of `bucket` int32 entries (-1: pruned). 0, or -1 with an exception set. */
static int prune_ranks(Kernel *self, const Py_buffer *prune, long long bucket, long long nwords) {
    const Py_ssize_t dim = self->dim;
    if (prune->itemsize != 4 || (prune->format && strcmp(prune->format, "i") != 0) ||
        prune->len != 4 * bucket) {
        PyErr_SetString(PyExc_ValueError, "bucket_rows must be an int32 buffer of `bucket` entries");
        return -1;
    }
    const int32_t *rows = (const int32_t *)prune->buf;
    int ranked = 1;
    int64_t kept = 0;
    for (long long b = 0; b < bucket; b++) {
        if (rows[b] < -1 || rows[b] >= self->nrows) {
            PyErr_SetString(PyExc_ValueError, "bucket_rows points past the table");
            return -1;
        }
        if (rows[b] >= 0) ranked &= rows[b] == nwords + kept++;
    }
    /* The int32 map is 4 MB for 1M buckets, read at random once per n-gram: the rank form is
     * 256 KB and stays in cache. fastText's quantize numbers the kept rows by n-gram count, not by
     * bucket, so a copy of the table puts them in bucket order first (same values, other places) unless
     * the caller did (LinearScorer does, so that the table exists once). Kept for the megabytes it
     * takes out of the loop's random reads more than for its speed. */
    if (!ranked) {
        self->own_rows = PyMem_Malloc(sizeof(float) * (size_t)((nwords + kept) * dim));
        if (!self->own_rows) {
            PyErr_NoMemory();
            return -1;
        }
        const float *from = (const float *)self->table.buf;
        memcpy(self->own_rows, from, sizeof(float) * (size_t)(nwords * dim));
        int64_t rank = 0;
        for (long long b = 0; b < bucket; b++)
            if (rows[b] >= 0)
                memcpy(self->own_rows + (nwords + rank++) * dim, from + (int64_t)rows[b] * dim,
                       sizeof(float) * (size_t)dim);
        self->rows = self->own_rows;
    }
    {
        size_t words = (size_t)(bucket / 64 + 1);
        self->ranks = PyMem_Calloc(words, sizeof(RankWord));
        if (!self->ranks) {
            PyErr_NoMemory();
            return -1;
        }
        for (long long b = 0; b < bucket; b++)
            if (rows[b] >= 0) self->ranks[b / 64].kept |= 1ull << (b % 64);
        uint64_t before = 0;
        for (size_t w = 0; w < words; w++) {
            self->ranks[w].before = before;
            before += (uint64_t)bit_count(self->ranks[w].kept);
        }
    }
    return 0;
}

static int Kernel_init(Kernel *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"keys", "codes", "word_ngrams", "bucket", "nwords", "bucket_rows", "table",
                             "dim", NULL};
    PyObject *keys, *codes, *bucket_rows, *table;
    int word_ngrams;
    long long bucket, nwords;
    Py_ssize_t dim;
    if (self->blob != NULL || self->table.obj != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Kernel is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!iLLOOn", kwlist, &PyList_Type, &keys, &PyList_Type,
                                     &codes, &word_ngrams, &bucket, &nwords, &bucket_rows, &table, &dim))
        return -1;
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(codes) != n || dim <= 0 || nwords < 0 || nwords > INT32_MAX || word_ngrams < 1 ||
        (word_ngrams > 1 && bucket <= 0)) {
        PyErr_SetString(PyExc_ValueError, "inconsistent Kernel arguments");
        return -1;
    }
    self->word_ngrams = word_ngrams;
    self->bucket = (uint64_t)(bucket > 0 ? bucket : 1);
    self->nwords = nwords;
    self->dim = dim;
    if (PyObject_GetBuffer(table, &self->table, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    if (self->table.itemsize != 4 || (self->table.format && strcmp(self->table.format, "f") != 0) ||
        self->table.len % (4 * dim) != 0) {
        PyErr_SetString(PyExc_ValueError, "table must be a C-contiguous float32 buffer of rows x dim");
        return -1;
    }
    self->nrows = self->table.len / (4 * dim);
    self->rows = (const float *)self->table.buf;
    if (bucket_rows != Py_None) {
        Py_buffer prune; /* read here only: the rank map replaces it */
        if (PyObject_GetBuffer(bucket_rows, &prune, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
        int status = prune_ranks(self, &prune, bucket, nwords);
        PyBuffer_Release(&prune);
        if (status < 0) return -1;
    } else if (word_ngrams > 1 && nwords + bucket > self->nrows) {
        PyErr_SetString(PyExc_ValueError, "table has fewer than nwords + bucket rows");
        return -1;
    }
    if (nwords > self->nrows) {
        PyErr_SetString(PyExc_ValueError, "table has fewer rows than words");
        return -1;
    }

    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        if (!PyBytes_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "keys must be bytes");
            return -1;
        }
        total += PyBytes_GET_SIZE(key);
    }
    if (total >= (Py_ssize_t)UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "vocabulary too large");
        return -1;
    }
    uint64_t size = 64;
    while (2 * size < 3 * (uint64_t)n) size *= 2;
    self->blob = PyMem_Malloc((size_t)total + 1);
    self->slots = PyMem_Calloc((size_t)size, sizeof(Slot));
    self->tails = PyMem_Calloc((size_t)size, sizeof(Tail));
    if (!self->blob || !self->slots || !self->tails) {
        PyErr_NoMemory();
        return -1;
    }
    self->mask = size - 1;
    uint32_t at = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        long long code = PyLong_AsLongLong(PyList_GET_ITEM(codes, i));
        if (code == -1 && PyErr_Occurred()) return -1;
        if (code >= nwords) {
            PyErr_SetString(PyExc_ValueError, "a word code is not below nwords");
            return -1;
        }
        const char *data = PyBytes_AS_STRING(key);
        Py_ssize_t length = PyBytes_GET_SIZE(key);
        if (length == 0) continue; /* a token is never empty: such a key never matches */
        uint32_t hash = fasttext_hash(data, length);
        Slot *slot = find_slot(self, data, length, hash);
        /* A later duplicate replaces the earlier code, as in fastText. */
        slot->code = code < 0 ? CODE_LABEL : (int32_t)code;
        if (slot->tag != 0) continue;
        memcpy(self->blob + at, data, (size_t)length);
        slot->head = key_head(data, length);
        slot->tag = key_tag(hash, length);
        self->tails[slot - self->slots] = (Tail){at, (uint32_t)length};
        at += (uint32_t)length;
    }
    self->eos_hash = fasttext_hash("</s>", 4);
    Slot *eos = find_slot(self, "</s>", 4, self->eos_hash);
    self->eos_code = eos->tag == 0 ? CODE_MISSING : eos->code;
    return 0;
}

/* Byte classes: 0 inside a token, 1 a separator (space \t \v \f \r \0), 2 the newline (ends a line). */
static unsigned char byte_class[256];

static void init_byte_class(void) {
    byte_class[' '] = byte_class['\t'] = byte_class['\v'] = byte_class['\f'] = byte_class['\r'] = 1;
    byte_class['\0'] = 1;
    byte_class['\n'] = 2;
}

/* Per-call scratch, sized for the longest line. */
typedef struct {
    Py_ssize_t *starts;
    Py_ssize_t *lengths;
    uint32_t *token_hashes;
    uint64_t *heads;
    uint64_t *hashes; /* sign-extended word hashes (words and unknown words) */
    int64_t *rows;    /* rows to add, in fastText's order */
    /* Only for explain_rows (NULL otherwise): each hashed token's bytes (start -1: "</s>"), and each
     * row's first hashed token and number of tokens (1: a word, n: a word n-gram). */
    Py_ssize_t *hash_starts;
    Py_ssize_t *hash_lengths;
    int64_t *row_first;
    int64_t *row_length;
} Scratch;

/* One line, in phases so the cache misses of a phase overlap (the vocabulary, prune index and table
 * are several MB each, read at random): tokens and their hashes, vocabulary slots, n-gram buckets,
 * then the rows summed in order. */
static int64_t sum_line(const Kernel *k, const char *text, Py_ssize_t length, Scratch *s, float *sum,
                        Py_ssize_t *words, Py_ssize_t *tokens) {
    const int spans = s->row_first != NULL;
    const float *table = k->rows;
    const Py_ssize_t dim = k->dim;
    Py_ssize_t ntokens = 0, i = 0;
    /* One pass over the bytes finds the tokens, their hashes and first 8 bytes: faster than a
     * separate tokenise / hash / pack, which reads each line three times. */
    for (;;) {
        while (i < length && byte_class[(unsigned char)text[i]] == 1) i++;
        if (i >= length || text[i] == '\n') break;
        const Py_ssize_t start = i;
        uint32_t hash = FNV_OFFSET;
        uint64_t head = 0;
        for (; i < length && byte_class[(unsigned char)text[i]] == 0; i++) {
            hash = (hash ^ (uint32_t)(int32_t)(signed char)text[i]) * FNV_PRIME;
            if (i - start < 8) head |= (uint64_t)(unsigned char)text[i] << (8 * (i - start));
        }
        if (i - start == 4 && memcmp(text + start, "</s>", 4) == 0) break; /* the line ends here */
        __builtin_prefetch(&k->slots[home(k, hash)]);
        s->heads[ntokens] = head;
        s->starts[ntokens] = start;
        s->lengths[ntokens] = i - start;
        s->token_hashes[ntokens++] = hash;
    }
    Py_ssize_t nrows = 0, nhashes = 0;
    for (Py_ssize_t t = 0; t < ntokens; t++) {
        const char *token = text + s->starts[t];
        Py_ssize_t size = s->lengths[t];
        uint32_t hash = s->token_hashes[t];
        const Slot *slot = find_slot_head(k, token, size, hash, s->heads[t]);
        int32_t code = slot->tag == 0 ? CODE_MISSING : slot->code;
        if (code == CODE_LABEL ||
            (code == CODE_MISSING && size >= LABEL_PREFIX_LEN && memcmp(token, LABEL_PREFIX, LABEL_PREFIX_LEN) == 0))
            continue;
        if (code >= 0) {
            __builtin_prefetch(table + (int64_t)code * dim);
            if (spans) s->row_first[nrows] = nhashes, s->row_length[nrows] = 1;
            s->rows[nrows++] = code;
        }
        if (spans) s->hash_starts[nhashes] = s->starts[t], s->hash_lengths[nhashes] = size;
        s->hashes[nhashes++] = (uint64_t)(int64_t)(int32_t)hash;
    }
    if (k->eos_code != CODE_LABEL) { /* fastText's end-of-line token */
        if (k->eos_code >= 0) {
            if (spans) s->row_first[nrows] = nhashes, s->row_length[nrows] = 1;
            s->rows[nrows++] = k->eos_code;
        }
        if (spans) s->hash_starts[nhashes] = -1, s->hash_lengths[nhashes] = 4;
        s->hashes[nhashes++] = (uint64_t)(int64_t)(int32_t)k->eos_hash;
    }
    *words = nrows;
    *tokens = nhashes; /* s->rows[0, nrows): the word rows in token order; the n-grams go after them */
    if (k->word_ngrams > 1) {
        const RankWord *ranks = k->ranks;
        Py_ssize_t first = nrows;
        for (Py_ssize_t a = 0; a < nhashes; a++) {
            uint64_t h = s->hashes[a];
            for (Py_ssize_t b = a + 1; b < nhashes && b < a + k->word_ngrams; b++) {
                h = h * NGRAM_MULTIPLIER + s->hashes[b];
                int64_t bucket = (int64_t)(h % k->bucket);
                if (ranks) __builtin_prefetch(ranks + bucket / 64);
                if (spans) s->row_first[nrows] = a, s->row_length[nrows] = b - a + 1;
                s->rows[nrows++] = bucket;
            }
        }
        Py_ssize_t kept = first;
        for (Py_ssize_t r = first; r < nrows; r++) {
            int64_t bucket = s->rows[r], row;
            if (ranks) {
                const RankWord word = ranks[bucket / 64];
                const uint64_t bit = 1ull << (bucket % 64);
                row = (word.kept & bit)
                          ? k->nwords + (int64_t)(word.before + (uint64_t)bit_count(word.kept & (bit - 1)))
                          : -1;
            } else {
                row = k->nwords + bucket;
            }
            if (row >= 0) {
                __builtin_prefetch(table + row * dim);
                if (spans) s->row_first[kept] = s->row_first[r], s->row_length[kept] = s->row_length[r];
                s->rows[kept++] = row;
            }
        }
        nrows = kept;
    }
    /* Each component is added row after row from zero, as fastText's Vector::addRow does. */
    if (dim == 3) { /* a model projected onto the 3 labels (the recipe): the sums stay in registers */
        float a = 0.0f, b = 0.0f, c = 0.0f;
        for (Py_ssize_t r = 0; r < nrows; r++) {
            const float *values = table + s->rows[r] * 3;
            a += values[0];
            b += values[1];
            c += values[2];
        }
        sum[0] = a, sum[1] = b, sum[2] = c;
        return nrows;
    }
    for (Py_ssize_t j = 0; j < dim; j++) sum[j] = 0.0f;
    for (Py_ssize_t r = 0; r < nrows; r++) {
        const float *values = table + s->rows[r] * dim;
        for (Py_ssize_t j = 0; j < dim; j++) sum[j] += values[j];
    }
    return nrows;
}

/* A writable int64[n] buffer (released by the caller, also on failure); -1 with ValueError otherwise. */
static int get_int64s(PyObject *arg, Py_buffer *view, Py_ssize_t n, const char *name) {
    if (PyObject_GetBuffer(arg, view, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) < 0) return -1;
    if (view->itemsize != 8 || (view->format && strcmp(view->format, "q") != 0 && strcmp(view->format, "l") != 0) ||
        view->len != 8 * n) {
        PyErr_Format(PyExc_ValueError, "%s must be int64[n]", name);
        return -1;
    }
    return 0;
}

/* Scratch for lines of up to `longest` bytes: at most longest / 2 + 1 tokens, plus "</s>"; n-grams:
 * word_ngrams - 1 each. With spans, the arrays explain_rows reads too. 0, or -1 with MemoryError. */
static int scratch_alloc(Scratch *s, Py_ssize_t longest, int word_ngrams, int spans) {
    size_t tokens = (size_t)(longest / 2 + 3), rows = tokens * (size_t)word_ngrams;
    s->starts = PyMem_Malloc(sizeof(Py_ssize_t) * tokens);
    s->lengths = PyMem_Malloc(sizeof(Py_ssize_t) * tokens);
    s->token_hashes = PyMem_Malloc(sizeof(uint32_t) * tokens);
    s->heads = PyMem_Malloc(sizeof(uint64_t) * tokens);
    s->hashes = PyMem_Malloc(sizeof(uint64_t) * tokens);
    s->rows = PyMem_Malloc(sizeof(int64_t) * rows);
    int ok = s->starts && s->lengths && s->token_hashes && s->heads && s->hashes && s->rows;
    if (ok && spans) {
        s->hash_starts = PyMem_Malloc(sizeof(Py_ssize_t) * tokens);
        s->hash_lengths = PyMem_Malloc(sizeof(Py_ssize_t) * tokens);
        s->row_first = PyMem_Malloc(sizeof(int64_t) * rows);
        s->row_length = PyMem_Malloc(sizeof(int64_t) * rows);
        ok = s->hash_starts && s->hash_lengths && s->row_first && s->row_length;
    }
    if (!ok) PyErr_NoMemory();
    return ok ? 0 : -1;
}

static void scratch_free(Scratch *s) {
    PyMem_Free(s->starts);
    PyMem_Free(s->lengths);
    PyMem_Free(s->token_hashes);
    PyMem_Free(s->heads);
    PyMem_Free(s->hashes);
    PyMem_Free(s->rows);
    PyMem_Free(s->hash_starts);
    PyMem_Free(s->hash_lengths);
    PyMem_Free(s->row_first);
    PyMem_Free(s->row_length);
}

/* A line's UTF-8 bytes (a str) or its bytes (bytes: the caller's encoding of a str that has no UTF-8
 * form); NULL with TypeError for anything else, NULL with UnicodeEncodeError for a lone surrogate. */
static const char *line_bytes(PyObject *line, Py_ssize_t index, Py_ssize_t *length) {
    if (PyBytes_Check(line)) {
        *length = PyBytes_GET_SIZE(line);
        return PyBytes_AS_STRING(line);
    }
    if (!PyUnicode_Check(line)) {
        PyErr_Format(PyExc_TypeError, "line %zd is %.100s, not str", index, Py_TYPE(line)->tp_name);
        return NULL;
    }
    return PyUnicode_AsUTF8AndSize(line, length);
}

static int kernel_ready(const Kernel *self) {
    if (self->slots == NULL || self->table.obj == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Kernel was not initialised");
        return 0;
    }
    return 1;
}

static PyObject *Kernel_sum_rows(Kernel *self, PyObject *args) {
    PyObject *lines_arg, *sums_arg, *counts_arg, *words_arg = Py_None, *tokens_arg = Py_None;
    if (!PyArg_ParseTuple(args, "OOO|OO", &lines_arg, &sums_arg, &counts_arg, &words_arg, &tokens_arg))
        return NULL;
    if (!kernel_ready(self)) return NULL;
    /* A tuple of our own: the strings stay alive while the GIL is released. */
    PyObject *lines = PySequence_Tuple(lines_arg);
    if (lines == NULL) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(lines);
    Py_buffer sums = {0}, counts = {0}, words = {0}, tokens = {0};
    PyObject *result = NULL;
    const char **texts = NULL;
    Py_ssize_t *lengths = NULL;
    int64_t *word_rows = NULL;
    Scratch scratch = {0};
    if (PyObject_GetBuffer(sums_arg, &sums, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) < 0) goto done;
    if (sums.itemsize != 4 || (sums.format && strcmp(sums.format, "f") != 0) || sums.len != 4 * n * self->dim) {
        PyErr_SetString(PyExc_ValueError, "sums must be float32[n * dim]");
        goto done;
    }
    if (get_int64s(counts_arg, &counts, n, "counts") < 0) goto done;
    if (words_arg != Py_None && get_int64s(words_arg, &words, n, "words") < 0) goto done;
    if (tokens_arg != Py_None && get_int64s(tokens_arg, &tokens, n, "tokens") < 0) goto done;
    texts = PyMem_Malloc(sizeof(char *) * (size_t)(n + 1));
    lengths = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n + 1));
    if (!texts || !lengths) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t longest = 0, all_words = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        texts[i] = line_bytes(PyTuple_GET_ITEM(lines, i), i, &lengths[i]);
        if (texts[i] == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) goto done;
            PyErr_Clear(); /* a lone surrogate: the caller passes that line as bytes */
            Py_INCREF(Py_False);
            result = Py_False;
            goto done;
        }
        if (lengths[i] > longest) longest = lengths[i];
        all_words += lengths[i] / 2 + 2; /* at most L / 2 + 1 tokens, and "</s>" */
    }
    if (words.obj && !(word_rows = PyMem_Malloc(sizeof(int64_t) * (size_t)all_words))) {
        PyErr_NoMemory();
        goto done;
    }
    if (scratch_alloc(&scratch, longest, self->word_ngrams, 0) < 0) goto done;
    {
        float *out = (float *)sums.buf;
        int64_t *count_out = (int64_t *)counts.buf, *words_out = (int64_t *)words.buf;
        int64_t *tokens_out = (int64_t *)tokens.buf;
        const Py_ssize_t dim = self->dim;
        Py_ssize_t line_words, line_tokens, kept = 0;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++) {
            count_out[i] = sum_line(self, texts[i], lengths[i], &scratch, out + i * dim, &line_words, &line_tokens);
            if (tokens_out) tokens_out[i] = line_tokens;
            if (word_rows) {
                memcpy(word_rows + kept, scratch.rows, sizeof(int64_t) * (size_t)line_words);
                kept += words_out[i] = line_words;
            }
        }
        Py_END_ALLOW_THREADS
        if (word_rows) {
            result = PyBytes_FromStringAndSize((const char *)word_rows, (Py_ssize_t)sizeof(int64_t) * kept);
            goto done;
        }
    }
    Py_INCREF(Py_True);
    result = Py_True;
done:
    PyMem_Free(texts);
    PyMem_Free(lengths);
    scratch_free(&scratch);
    PyMem_Free(word_rows);
    if (sums.obj) PyBuffer_Release(&sums);
    if (counts.obj) PyBuffer_Release(&counts);
    if (words.obj) PyBuffer_Release(&words);
    if (tokens.obj) PyBuffer_Release(&tokens);
    Py_DECREF(lines);
    return result;
}

static PyObject *Kernel_explain_rows(Kernel *self, PyObject *line) {
    if (!kernel_ready(self)) return NULL;
    Py_ssize_t length, line_words, line_tokens;
    const char *text = line_bytes(line, 0, &length);
    if (text == NULL) return NULL;
    Scratch scratch = {0};
    PyObject *result = NULL, *rows = NULL, *firsts = NULL, *spans = NULL, *tokens = NULL;
    float *sum = PyMem_Malloc(sizeof(float) * (size_t)self->dim);
    if (sum == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (scratch_alloc(&scratch, length, self->word_ngrams, 1) < 0) goto done;
    int64_t nrows = sum_line(self, text, length, &scratch, sum, &line_words, &line_tokens);
    rows = PyList_New((Py_ssize_t)nrows);
    firsts = PyList_New((Py_ssize_t)nrows);
    spans = PyList_New((Py_ssize_t)nrows);
    tokens = PyList_New(line_tokens);
    if (!rows || !firsts || !spans || !tokens) goto done;
    for (int64_t r = 0; r < nrows; r++) {
        PyObject *row = PyLong_FromLongLong(scratch.rows[r]), *first = PyLong_FromLongLong(scratch.row_first[r]),
                 *span = PyLong_FromLongLong(scratch.row_length[r]);
        if (row) PyList_SET_ITEM(rows, r, row);
        if (first) PyList_SET_ITEM(firsts, r, first);
        if (span) PyList_SET_ITEM(spans, r, span);
        if (!row || !first || !span) goto done;
    }
    for (Py_ssize_t t = 0; t < line_tokens; t++) {
        Py_ssize_t start = scratch.hash_starts[t];
        PyObject *token = PyBytes_FromStringAndSize(start < 0 ? "</s>" : text + start, scratch.hash_lengths[t]);
        if (!token) goto done;
        PyList_SET_ITEM(tokens, t, token);
    }
    result = PyTuple_Pack(4, rows, firsts, spans, tokens);
done:
    Py_XDECREF(rows);
    Py_XDECREF(firsts);
    Py_XDECREF(spans);
    Py_XDECREF(tokens);
    scratch_free(&scratch);
    PyMem_Free(sum);
    return result;
}

static PyMethodDef Kernel_methods[] = {
    {"sum_rows", (PyCFunction)Kernel_sum_rows, METH_VARARGS,
     "sum_rows(lines, sums, counts[, words[, tokens]]) -> bool | bytes: each line's float32 row sum and row "
     "count, in fastText's order; False if a str line has no UTF-8 form (pass it as bytes). With words "
     "(int64[n]): each line's number of word rows there, and the word rows themselves returned as int64 "
     "bytes, line after line. With tokens (int64[n]): each line's number of tokens that are not labels."},
    {"explain_rows", (PyCFunction)Kernel_explain_rows, METH_O,
     "explain_rows(line) -> (rows, firsts, lengths, tokens): the line's rows in fastText's order, each "
     "row's first token and number of tokens, and the line's tokens that are not labels (bytes)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject KernelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sentiment_model._fastlinear.Kernel",
    .tp_basicsize = sizeof(Kernel),
    .tp_dealloc = (destructor)Kernel_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A word-only fastText model's tokenise/hash/lookup/sum loop (see the module source).",
    .tp_methods = Kernel_methods,
    .tp_init = (initproc)Kernel_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef fastlinear_module = {
    PyModuleDef_HEAD_INIT, "_fastlinear",
    "The per-token loop of sentiment_model.linear_scorer, compiled.", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastlinear(void) {
    init_byte_class();
    if (PyType_Ready(&KernelType) < 0) return NULL;
    PyObject *module = PyModule_Create(&fastlinear_module);
    if (module == NULL) return NULL;
    Py_INCREF(&KernelType);
    if (PyModule_AddObject(module, "Kernel", (PyObject *)&KernelType) < 0) {
        Py_DECREF(&KernelType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
