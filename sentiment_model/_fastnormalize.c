/* sentiment_model.normalize_text.normalize_text in C for pure-ASCII texts, one pass per step per text.
 *
 * Semantics are those of clean_text then normalize_text, for a text of ASCII characters only:
 *   1. str.strip() (whitespace: space \t \n \v \f \r and \x1c-\x1f, as str.isspace and the regex \s);
 *   2. unescape: "\uXXXX" escapes once, then up to 3 passes of the HTML entities (the Python rounds;
 *      no entity can spell an escape and no accepted escape can spell an entity or another escape, so
 *      this order is theirs). An escape of an ASCII character is taken only if that character is not
 *      alphanumeric, not "\" and in no entity; one of a non-ASCII character only if it is in `folds`
 *      (what NFKC and the typography table make of it, characters no entity uses), and the text is
 *      then stripped again as Python strips after NFKC. Any other escape: the text is not handled;
 *   3. while it is longer than 1 and starts and ends with '"': drop both, strip;
 *   4. (?:https?://|www\.)\S+ (case-insensitive) -> " URL ", leftmost, greedy;
 *   5. on what 4 left: @\w+ -> " @user ", lower(), runs of 3+ of one \w character and of 2+ of one of
 *      "!?." cut to two, every `padded` character made a token of its own, an apostrophe made one unless
 *      a \w character is on both sides ((?<!\w)'|'(?!\w)), whitespace runs -> one space. \w is
 *      [A-Za-z0-9_]. "#(\w+)" -> "# \1" needs no step: "#" must be padded, so the space is there anyway.
 *      Other characters (the controls \x00-\x08, \x0e-\x1b, \x7f) are none of \w, whitespace, P or S:
 *      they stay inside their token, as in Python;
 *   6. lexicon marks: a token's code is token_codes()[token] (0 when absent; its bits positive_bit,
 *      negative_bit, negation_bit, clause_bit as lexicon.py defines them); a negation makes the next `negation_reach` tokens negated and earns
 *      no mark, a clause end stops the negation, a token with a valence earns `positive` or `negative`
 *      (flipped when negated); the marks follow the tokens, one space between any two.
 *
 * Normalizer(token_codes, *, padded, entities, folds, positive, negative, negation_reach, positive_bit,
 *            negative_bit, negation_bit, clause_bit)
 *   token_codes: dict str -> int (the lexicon; keys that are not ASCII can never match and are skipped);
 *   padded: str, the ASCII characters that Python's spacing table pads (no \w, whitespace, "'", "@";
 *   must hold "#"); entities: dict entity -> its one-character replacement ("&...;" keys); folds:
 *   dict code point -> ASCII str of up to 6 characters; positive, negative: the ASCII mark tokens;
 *   negation_reach: int >= 0. Every argument is checked for the assumptions above (ValueError).
 * Normalizer.normalize(texts) -> list[str | None]
 *   texts: a sequence. Per text the exact normalize_text(text), or None for a text this code does not
 *   handle (not a str, any non-ASCII character, an escape outside the accepted ones): the caller runs the
 *   Python code on those. The per-text loop runs without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define FNV_OFFSET 2166136261u
#define FNV_PRIME 16777619u
#define MAX_FOLDS 32
#define MAX_FOLD_LENGTH 6 /* "\uXXXX" is 6 characters: a fold never lengthens the text */
#define MAX_ENTITIES 32
#define MAX_ENTITY_LENGTH 16
#define USER_TOKEN "@user"
#define URL_MASK " URL "
#define FILTER_BITS (1 << 16)

/* Character classes, one bit each. */
enum { WORD = 1, SPACE = 2, PADDED = 4, SQUASHED = 8, ESCAPABLE = 16 };

/* One lexicon slot, open addressing with linear probing (load <= 1/2). */
typedef struct {
    uint32_t hash;   /* FNV-1a of the key */
    uint32_t start;  /* the key is blob[start : start + length] */
    uint16_t length; /* 0: empty slot */
    uint8_t code;
} Slot;

typedef struct {
    uint32_t code_point;
    uint8_t length;
    char text[MAX_FOLD_LENGTH];
} Fold;

typedef struct {
    uint8_t length; /* of the name, "&" and ";" included */
    char replacement;
    char name[MAX_ENTITY_LENGTH];
} Entity;

typedef struct {
    PyObject_HEAD
    unsigned char classes[128];
    char *blob;
    Slot *slots;
    uint32_t mask;
    uint64_t filter[FILTER_BITS / 64]; /* a bit per hash: most tokens are in no entry, found out here */
    char *positive, *negative;
    Py_ssize_t positive_length, negative_length, reach;
    unsigned positive_bit, negative_bit, negation_bit, clause_bit; /* of token_codes' values */
    Fold folds[MAX_FOLDS];
    int nfolds;
    Entity entities[MAX_ENTITIES];
    int nentities;
} Normalizer;

#define IS(nz, c, bit) ((nz)->classes[(unsigned char)(c)] & (bit))

static inline uint32_t fnv1a(const char *data, Py_ssize_t length) {
    uint32_t h = FNV_OFFSET;
    for (Py_ssize_t i = 0; i < length; i++) h = (h ^ (unsigned char)data[i]) * FNV_PRIME;
    return h;
}

static inline uint32_t home(const Normalizer *nz, uint32_t hash) {
    return (uint32_t)(((uint64_t)hash * 0x9E3779B97F4A7C15ull) >> 32) & nz->mask;
}

static inline Slot *find_slot(const Normalizer *nz, const char *token, Py_ssize_t length, uint32_t hash) {
    uint32_t at = home(nz, hash);
    for (;;) {
        Slot *slot = &nz->slots[at];
        if (slot->length == 0 ||
            (slot->hash == hash && slot->length == length && memcmp(nz->blob + slot->start, token, (size_t)length) == 0))
            return slot;
        at = (at + 1) & nz->mask;
    }
}

static void Normalizer_dealloc(Normalizer *self) {
    PyMem_Free(self->blob);
    PyMem_Free(self->slots);
    PyMem_Free(self->positive);
    PyMem_Free(self->negative);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The characters of an ASCII str (NULL with ValueError set when it is not one). */
static const char *ascii_chars(PyObject *text, Py_ssize_t *length, const char *what) {
    if (!PyUnicode_Check(text) || PyUnicode_READY(text) < 0 || !PyUnicode_IS_ASCII(text)) {
        if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "%s must be an ASCII str", what);
        return NULL;
    }
    *length = PyUnicode_GET_LENGTH(text);
    return (const char *)PyUnicode_DATA(text);
}

static char *copy_ascii(PyObject *text, Py_ssize_t *length, const char *what) {
    const char *chars = ascii_chars(text, length, what);
    if (chars == NULL) return NULL;
    char *copy = PyMem_Malloc((size_t)*length + 1);
    if (copy == NULL) return (char *)PyErr_NoMemory();
    memcpy(copy, chars, (size_t)*length);
    return copy;
}

static int Normalizer_init(Normalizer *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"token_codes", "padded", "entities", "folds", "positive", "negative",
                             "negation_reach", "positive_bit", "negative_bit", "negation_bit", "clause_bit",
                             NULL};
    PyObject *codes, *padded, *entities, *folds, *positive, *negative;
    Py_ssize_t reach;
    if (self->slots != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Normalizer is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!$UO!O!UUnIIII", kwlist, &PyDict_Type, &codes, &padded,
                                     &PyDict_Type, &entities, &PyDict_Type, &folds, &positive, &negative,
                                     &reach, &self->positive_bit, &self->negative_bit, &self->negation_bit,
                                     &self->clause_bit))
        return -1;
    if (reach < 0) {
        PyErr_SetString(PyExc_ValueError, "negation_reach must be >= 0");
        return -1;
    }
    self->reach = reach;

    memset(self->classes, 0, sizeof(self->classes));
    for (int c = 0; c < 128; c++) {
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')
            self->classes[c] |= WORD | SQUASHED;
        if (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f)) self->classes[c] |= SPACE;
    }
    self->classes['!'] |= SQUASHED;
    self->classes['?'] |= SQUASHED;
    self->classes['.'] |= SQUASHED;
    Py_ssize_t length;
    const char *chars = ascii_chars(padded, &length, "padded");
    if (chars == NULL) return -1;
    for (Py_ssize_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)chars[i];
        if (IS(self, c, WORD | SPACE) || c == '\'' || c == '@') {
            PyErr_SetString(PyExc_ValueError, "padded holds \\w, whitespace, \"'\" or \"@\"");
            return -1;
        }
        self->classes[c] |= PADDED;
    }
    if (!IS(self, '#', PADDED)) {
        PyErr_SetString(PyExc_ValueError, "padded must hold \"#\" (the hashtag rule relies on it)");
        return -1;
    }

    /* Entities. An escape may spell a character only if no entity holds it. */
    for (int c = 0; c < 128; c++)
        if (!IS(self, c, WORD) && c != '\\') self->classes[c] |= ESCAPABLE;
    self->classes['_'] |= ESCAPABLE; /* \w but not alphanumeric: spells no escape */
    PyObject *key, *value;
    Py_ssize_t at = 0;
    self->nentities = 0;
    while (PyDict_Next(entities, &at, &key, &value)) {
        Py_ssize_t name_length, replacement_length;
        const char *name = ascii_chars(key, &name_length, "an entity");
        if (name == NULL) return -1;
        const char *replacement = ascii_chars(value, &replacement_length, "an entity's replacement");
        if (replacement == NULL) return -1;
        if (self->nentities == MAX_ENTITIES || name_length < 3 || name_length > MAX_ENTITY_LENGTH ||
            name[0] != '&' || name[name_length - 1] != ';' || memchr(name + 1, ';', (size_t)name_length - 2) ||
            memchr(name + 1, '&', (size_t)name_length - 2) || replacement_length != 1 ||
            !IS(self, replacement[0], ESCAPABLE)) {
            PyErr_SetString(PyExc_ValueError, "entities must map up to 32 \"&name;\" to one character "
                                              "that is neither alphanumeric nor \"\\\"");
            return -1;
        }
        Entity *entity = &self->entities[self->nentities++];
        entity->length = (uint8_t)name_length;
        entity->replacement = replacement[0];
        memcpy(entity->name, name, (size_t)name_length);
    }
    for (int e = 0; e < self->nentities; e++)
        for (int i = 0; i < self->entities[e].length; i++)
            self->classes[(unsigned char)self->entities[e].name[i]] &= (unsigned char)~ESCAPABLE;

    at = 0;
    self->nfolds = 0;
    while (PyDict_Next(folds, &at, &key, &value)) {
        long code_point = PyLong_Check(key) ? PyLong_AsLong(key) : -1;
        if (code_point == -1 && PyErr_Occurred()) return -1;
        Py_ssize_t fold_length;
        const char *fold = ascii_chars(value, &fold_length, "a fold");
        if (fold == NULL) return -1;
        int ok = self->nfolds < MAX_FOLDS && code_point >= 128 && code_point <= 0xFFFF &&
                 fold_length <= MAX_FOLD_LENGTH;
        for (Py_ssize_t i = 0; ok && i < fold_length; i++) ok = IS(self, fold[i], ESCAPABLE) != 0;
        if (!ok) {
            PyErr_SetString(PyExc_ValueError, "folds must map up to 32 BMP code points >= 128 to up to 6 "
                                              "characters an escape may spell");
            return -1;
        }
        Fold *entry = &self->folds[self->nfolds++];
        entry->code_point = (uint32_t)code_point;
        entry->length = (uint8_t)fold_length;
        memcpy(entry->text, fold, (size_t)fold_length);
    }

    if ((self->positive = copy_ascii(positive, &self->positive_length, "positive")) == NULL) return -1;
    if ((self->negative = copy_ascii(negative, &self->negative_length, "negative")) == NULL) return -1;

    /* The lexicon: its ASCII keys (no other key can equal an ASCII token). */
    Py_ssize_t n = 0, total = 0;
    at = 0;
    while (PyDict_Next(codes, &at, &key, &value)) {
        if (!PyUnicode_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "token_codes keys must be str");
            return -1;
        }
        if (PyUnicode_READY(key) < 0) return -1;
        if (!PyUnicode_IS_ASCII(key) || PyUnicode_GET_LENGTH(key) == 0) continue;
        if (PyUnicode_GET_LENGTH(key) > UINT16_MAX) {
            PyErr_SetString(PyExc_ValueError, "a token_codes key is too long");
            return -1;
        }
        n++;
        total += PyUnicode_GET_LENGTH(key);
    }
    if (total >= (Py_ssize_t)UINT32_MAX || n >= (Py_ssize_t)1 << 30) {
        PyErr_SetString(PyExc_ValueError, "token_codes is too large");
        return -1;
    }
    uint32_t size = 64;
    while (size < 2 * (uint64_t)n) size *= 2;
    self->blob = PyMem_Malloc((size_t)total + 1);
    self->slots = PyMem_Calloc(size, sizeof(Slot));
    if (!self->blob || !self->slots) {
        PyErr_NoMemory();
        return -1;
    }
    self->mask = size - 1;
    uint32_t used = 0;
    at = 0;
    while (PyDict_Next(codes, &at, &key, &value)) {
        if (!PyUnicode_IS_ASCII(key) || PyUnicode_GET_LENGTH(key) == 0) continue;
        long code = PyLong_Check(value) ? PyLong_AsLong(value) : -1;
        if (code == -1 && PyErr_Occurred()) return -1;
        if (code < 0 || code > 255) {
            PyErr_SetString(PyExc_ValueError, "token_codes values must be ints in 0..255");
            return -1;
        }
        const char *token = (const char *)PyUnicode_DATA(key);
        Py_ssize_t token_length = PyUnicode_GET_LENGTH(key);
        uint32_t hash = fnv1a(token, token_length);
        Slot *slot = find_slot(self, token, token_length, hash); /* dict keys are distinct: a free slot */
        memcpy(self->blob + used, token, (size_t)token_length);
        *slot = (Slot){hash, used, (uint16_t)token_length, (uint8_t)code};
        self->filter[hash % FILTER_BITS / 64] |= 1ull << (hash % FILTER_BITS % 64);
        used += (uint32_t)token_length;
    }
    return 0;
}

/* Per-call scratch: three buffers for the text between steps, the marks of a text, and the output of
 * every text back to back (grown as needed; raw allocations, used without the GIL). */
typedef struct {
    char *stages[3];
    unsigned char *marks;
    char *out;
    size_t out_size, out_used;
} Scratch;

static inline void strip(const Normalizer *nz, const char **text, Py_ssize_t *length) {
    const char *p = *text;
    Py_ssize_t n = *length;
    while (n > 0 && IS(nz, p[0], SPACE)) p++, n--;
    while (n > 0 && IS(nz, p[n - 1], SPACE)) n--;
    *text = p;
    *length = n;
}

static inline int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The text's "\uXXXX" escapes replaced (into `to`). Returns the new length, or -1 for an escape this
 * code does not take. Sets *folded when a non-ASCII character was spelled (Python then strips again). */
static Py_ssize_t unescape_codes(const Normalizer *nz, const char *text, Py_ssize_t n, char *to, int *folded) {
    char *w = to;
    Py_ssize_t i = 0;
    while (i < n) {
        if (text[i] == '\\' && i + 6 <= n && text[i + 1] == 'u') {
            int d0 = hex_digit(text[i + 2]), d1 = hex_digit(text[i + 3]), d2 = hex_digit(text[i + 4]),
                d3 = hex_digit(text[i + 5]);
            if ((d0 | d1 | d2 | d3) >= 0) {
                uint32_t code_point = (uint32_t)(d0 << 12 | d1 << 8 | d2 << 4 | d3);
                if (code_point < 128) {
                    if (!IS(nz, code_point, ESCAPABLE)) return -1;
                    *w++ = (char)code_point;
                } else {
                    int f = 0;
                    while (f < nz->nfolds && nz->folds[f].code_point != code_point) f++;
                    if (f == nz->nfolds) return -1;
                    memcpy(w, nz->folds[f].text, nz->folds[f].length);
                    w += nz->folds[f].length;
                    *folded = 1;
                }
                i += 6;
                continue;
            }
        }
        *w++ = text[i++];
    }
    return w - to;
}

/* One pass of the entity substitution (into `to`): the new length, or -1 when no entity was found. */
static Py_ssize_t unescape_entities(const Normalizer *nz, const char *text, Py_ssize_t n, char *to) {
    const char *amp = memchr(text, '&', (size_t)n);
    if (amp == NULL) return -1;
    char *w = to;
    Py_ssize_t i = 0;
    int found = 0;
    while (amp != NULL) {
        Py_ssize_t a = amp - text;
        memcpy(w, text + i, (size_t)(a - i));
        w += a - i;
        i = a;
        int e = 0;
        for (; e < nz->nentities; e++) {
            const Entity *entity = &nz->entities[e];
            if (entity->length <= n - a && memcmp(text + a, entity->name, entity->length) == 0) break;
        }
        if (e < nz->nentities) {
            *w++ = nz->entities[e].replacement;
            i = a + nz->entities[e].length;
            found = 1;
        } else {
            *w++ = '&';
            i = a + 1;
        }
        amp = i < n ? memchr(text + i, '&', (size_t)(n - i)) : NULL;
    }
    memcpy(w, text + i, (size_t)(n - i));
    w += n - i;
    return found ? w - to : -1;
}

/* Where the URL starting at i ends, or 0 if none starts there. */
static inline Py_ssize_t url_end(const Normalizer *nz, const char *p, Py_ssize_t n, Py_ssize_t i) {
    Py_ssize_t j;
    const char c = (char)(p[i] | 0x20); /* lower case of a letter: only 'H' and 'h' give 'h' */
    if (c == 'h' && i + 7 <= n && (p[i + 1] | 0x20) == 't' && (p[i + 2] | 0x20) == 't' &&
        (p[i + 3] | 0x20) == 'p') {
        j = i + 4;
        if ((p[j] | 0x20) == 's') j++;
        if (j + 3 > n || p[j] != ':' || p[j + 1] != '/' || p[j + 2] != '/') return 0;
        j += 3;
    } else if (c == 'w' && i + 4 <= n && (p[i + 1] | 0x20) == 'w' && (p[i + 2] | 0x20) == 'w' && p[i + 3] == '.') {
        j = i + 4;
    } else {
        return 0;
    }
    if (j >= n || IS(nz, p[j], SPACE)) return 0;
    while (j < n && !IS(nz, p[j], SPACE)) j++;
    return j;
}

/* Whether the text holds "://" or "www." in any case (Python's trigger: a URL needs one). */
static inline int has_url(const char *p, Py_ssize_t n) {
    for (const char *at = memchr(p, '.', (size_t)n); at != NULL; at = memchr(at + 1, '.', (size_t)(p + n - at - 1)))
        if (at - p >= 3 && (at[-1] | 0x20) == 'w' && (at[-2] | 0x20) == 'w' && (at[-3] | 0x20) == 'w') return 1;
    for (const char *at = memchr(p, ':', (size_t)n); at != NULL; at = memchr(at + 1, ':', (size_t)(p + n - at - 1)))
        if (p + n - at >= 3 && at[1] == '/' && at[2] == '/') return 1;
    return 0;
}

/* The tokens being written, and the lexicon state. */
typedef struct {
    char *out, *start; /* where the next character goes; where the current token starts */
    uint32_t hash;     /* of the current token so far */
    int in_token;
    Py_ssize_t count; /* tokens finished */
    Py_ssize_t negated_until;
    Py_ssize_t nmarks;
    unsigned char *marks; /* 1 positive, 0 negative */
} Tokens;

static inline void put(Tokens *t, char c) {
    if (!t->in_token) {
        if (t->count) *t->out++ = ' ';
        t->start = t->out;
        t->hash = FNV_OFFSET;
        t->in_token = 1;
    }
    *t->out++ = c;
    t->hash = (t->hash ^ (unsigned char)c) * FNV_PRIME;
}

static inline void end_token(const Normalizer *nz, Tokens *t) {
    if (!t->in_token) return;
    t->in_token = 0;
    const uint32_t bit = t->hash % FILTER_BITS;
    unsigned code = 0;
    if (nz->filter[bit / 64] >> (bit % 64) & 1) {
        const Slot *slot = find_slot(nz, t->start, t->out - t->start, t->hash);
        code = slot->length ? slot->code : 0;
    }
    const Py_ssize_t i = t->count++;
    if (code & nz->negation_bit) {
        t->negated_until = i + nz->reach;
        return;
    }
    if (code & nz->clause_bit) t->negated_until = -1;
    const unsigned valence = code & (nz->positive_bit | nz->negative_bit);
    if (valence) t->marks[t->nmarks++] = (valence == nz->positive_bit) != (i <= t->negated_until);
}

static inline void own_token(const Normalizer *nz, Tokens *t, const char *chars, Py_ssize_t length) {
    end_token(nz, t);
    for (Py_ssize_t i = 0; i < length; i++) put(t, chars[i]);
    end_token(nz, t);
}

static int reserve(Scratch *s, size_t more) {
    if (s->out_size - s->out_used >= more) return 0;
    size_t size = s->out_size ? s->out_size : 4096;
    while (size - s->out_used < more) size *= 2;
    char *out = PyMem_RawRealloc(s->out, size);
    if (out == NULL) return -1;
    s->out = out;
    s->out_size = size;
    return 0;
}

/* normalize_text of one ASCII text, appended to s->out: its length, -1 if not handled, -2 no memory. */
static Py_ssize_t normalize_one(const Normalizer *nz, const char *text, Py_ssize_t n, Scratch *s) {
    const char *p = text;
    Py_ssize_t length = n;
    strip(nz, &p, &length);
    int next = 0; /* the stage buffer to write next */
    int backslash_u = 0;
    for (const char *b = memchr(p, '\\', (size_t)length); b != NULL && !backslash_u;
         b = memchr(b + 1, '\\', (size_t)(p + length - b - 1)))
        backslash_u = b + 1 < p + length && b[1] == 'u';
    if (backslash_u || memchr(p, '&', (size_t)length) != NULL) {
        int folded = 0;
        if (backslash_u) {
            length = unescape_codes(nz, p, length, s->stages[next], &folded);
            if (length < 0) return -1;
            p = s->stages[next++];
        }
        for (int round = 0; round < 3; round++) {
            Py_ssize_t unescaped = unescape_entities(nz, p, length, s->stages[next]);
            if (unescaped < 0) break;
            p = s->stages[next];
            next = (next + 1) % 2;
            length = unescaped;
        }
        if (folded) strip(nz, &p, &length);
    }
    while (length > 1 && p[0] == '"' && p[length - 1] == '"') {
        p++;
        length -= 2;
        strip(nz, &p, &length);
    }
    /* URLs, into the third buffer if there is one (" URL " is no longer than the shortest match). */
    for (Py_ssize_t i = has_url(p, length) ? 0 : length; i < length; i++) {
        Py_ssize_t end = url_end(nz, p, length, i);
        if (end == 0) continue;
        char *w = s->stages[2];
        memcpy(w, p, (size_t)i);
        w += i;
        for (;;) {
            memcpy(w, URL_MASK, 5);
            w += 5;
            i = end;
            while (i < length && (end = url_end(nz, p, length, i)) == 0) *w++ = p[i++];
            if (i >= length) break;
        }
        p = s->stages[2];
        length = w - s->stages[2];
        break;
    }

    /* Tokens: at most 3 characters out per character in ("@x" -> " @user"), then one mark per token. */
    const Py_ssize_t longest_mark = nz->positive_length > nz->negative_length ? nz->positive_length
                                                                              : nz->negative_length;
    if (reserve(s, (size_t)length * (size_t)(4 + longest_mark) + 1) < 0) return -2;
    char *const begin = s->out + s->out_used;
    Tokens t = {begin, begin, FNV_OFFSET, 0, 0, -1, 0, s->marks};
    int previous = -1, run = 0, previous_word = 0;
    for (Py_ssize_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 'A' && c <= 'Z') c += 'a' - 'A';
        const unsigned char class = nz->classes[c];
        if (c == '@' && i + 1 < length && IS(nz, p[i + 1], WORD)) { /* a handle */
            own_token(nz, &t, USER_TOKEN, sizeof(USER_TOKEN) - 1);
            for (i++; i + 1 < length && IS(nz, p[i + 1], WORD); i++) {
            }
            previous = ' ';
            previous_word = 0;
            continue;
        }
        if (c == previous) {
            if ((class & SQUASHED) && ++run > 2) continue;
        } else {
            previous = c;
            run = 1;
        }
        if (class & SPACE) {
            end_token(nz, &t);
            previous_word = 0;
        } else if (c == '\'') {
            if (previous_word && i + 1 < length && IS(nz, p[i + 1], WORD)) put(&t, (char)c);
            else own_token(nz, &t, (const char *)&c, 1);
            previous_word = 0;
        } else if (class & PADDED) {
            own_token(nz, &t, (const char *)&c, 1);
            previous_word = 0;
        } else {
            put(&t, (char)c);
            previous_word = (class & WORD) != 0;
        }
    }
    end_token(nz, &t);
    for (Py_ssize_t m = 0; m < t.nmarks; m++) {
        *t.out++ = ' ';
        const char *mark = t.marks[m] ? nz->positive : nz->negative;
        const Py_ssize_t mark_length = t.marks[m] ? nz->positive_length : nz->negative_length;
        memcpy(t.out, mark, (size_t)mark_length);
        t.out += mark_length;
    }
    s->out_used += (size_t)(t.out - begin);
    return t.out - begin;
}

static PyObject *Normalizer_normalize(Normalizer *self, PyObject *texts_arg) {
    if (self->slots == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Normalizer was not initialised");
        return NULL;
    }
    /* A tuple of our own: the strings stay alive while the GIL is released. */
    PyObject *texts = PySequence_Tuple(texts_arg);
    if (texts == NULL) return NULL;
    const Py_ssize_t n = PyTuple_GET_SIZE(texts);
    PyObject *result = NULL;
    const char **chars = PyMem_Malloc(sizeof(char *) * (size_t)(n + 1));
    Py_ssize_t *lengths = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n + 1)); /* in, then out (-1: None) */
    Scratch s = {{NULL, NULL, NULL}, NULL, NULL, 0, 0};
    if (!chars || !lengths) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t longest = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *text = PyTuple_GET_ITEM(texts, i);
        chars[i] = NULL;
        if (!PyUnicode_Check(text)) continue; /* the Python code raises its own error */
        if (PyUnicode_READY(text) < 0) goto done;
        if (!PyUnicode_IS_ASCII(text)) continue;
        chars[i] = (const char *)PyUnicode_DATA(text);
        lengths[i] = PyUnicode_GET_LENGTH(text);
        if (lengths[i] > longest) longest = lengths[i];
    }
    for (int b = 0; b < 3; b++) s.stages[b] = PyMem_RawMalloc((size_t)longest + 1);
    s.marks = PyMem_RawMalloc((size_t)longest + 1); /* a token holds at least one character */
    if (!s.stages[0] || !s.stages[1] || !s.stages[2] || !s.marks) {
        PyErr_NoMemory();
        goto done;
    }
    int no_memory = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        if (chars[i] == NULL) {
            lengths[i] = -1;
            continue;
        }
        lengths[i] = normalize_one(self, chars[i], lengths[i], &s);
        if (lengths[i] == -2) {
            no_memory = 1;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    if (no_memory) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyList_New(n);
    if (result == NULL) goto done;
    const char *out = s.out;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item;
        if (lengths[i] < 0) {
            item = Py_None;
            Py_INCREF(item);
        } else {
            item = PyUnicode_New(lengths[i], 127);
            if (item == NULL) {
                Py_CLEAR(result);
                goto done;
            }
            memcpy(PyUnicode_DATA(item), out, (size_t)lengths[i]);
            out += lengths[i];
        }
        PyList_SET_ITEM(result, i, item);
    }
done:
    PyMem_Free(chars);
    PyMem_Free(lengths);
    for (int b = 0; b < 3; b++) PyMem_RawFree(s.stages[b]);
    PyMem_RawFree(s.marks);
    PyMem_RawFree(s.out);
    Py_DECREF(texts);
    return result;
}

static PyMethodDef Normalizer_methods[] = {
    {"normalize", (PyCFunction)Normalizer_normalize, METH_O,
     "normalize(texts) -> list[str | None]: normalize_text(text) of each text, or None where this code "
     "does not handle the text (the caller runs the Python code on those)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject NormalizerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sentiment_model._fastnormalize.Normalizer",
    .tp_basicsize = sizeof(Normalizer),
    .tp_dealloc = (destructor)Normalizer_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "normalize_text for pure-ASCII texts (see the module source).",
    .tp_methods = Normalizer_methods,
    .tp_init = (initproc)Normalizer_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef fastnormalize_module = {
    PyModuleDef_HEAD_INIT, "_fastnormalize",
    "sentiment_model.normalize_text.normalize_text for pure-ASCII texts, compiled.", -1, NULL, NULL, NULL,
    NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastnormalize(void) {
    if (PyType_Ready(&NormalizerType) < 0) return NULL;
    PyObject *module = PyModule_Create(&fastnormalize_module);
    if (module == NULL) return NULL;
    Py_INCREF(&NormalizerType);
    if (PyModule_AddObject(module, "Normalizer", (PyObject *)&NormalizerType) < 0) {
        Py_DECREF(&NormalizerType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
