/*
 * MD5 of several byte streams at once, one stream per SIMD lane.
 *
 * MD5 is serial within a stream, so one stream cannot go faster than one core's scalar
 * rounds (about 1.6 s per GiB here). The uploader has up to eight parts in flight, and each
 * needs its own MD5: with AVX2, one 256-bit register holds the same 32-bit word of eight
 * streams, and every MD5 step runs for all eight in one instruction. This is the
 * "multi-buffer" technique; the code is our own.
 *
 * Python sees a small `MD5` type (update / digest / hexdigest, as hashlib's) and
 * `update_lanes(digests, buffers)`, which adds buffers[i] to digests[i] for all i at once
 * with the GIL released. Without AVX2 (or on another architecture) the same calls run the
 * scalar rounds below, so results never depend on the machine.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define MD5LANES_X86 1
#include <immintrin.h>
#endif

#define LANES 8
#define BLOCK 64

/* The 64 steps: round function, registers in turn, message word, sine constant, shift. */
#define MD5_STEPS(S, F, G, H, I)                                                   \
    S(F, a, b, c, d, 0, 0xd76aa478, 7)   S(F, d, a, b, c, 1, 0xe8c7b756, 12)       \
    S(F, c, d, a, b, 2, 0x242070db, 17)  S(F, b, c, d, a, 3, 0xc1bdceee, 22)       \
    S(F, a, b, c, d, 4, 0xf57c0faf, 7)   S(F, d, a, b, c, 5, 0x4787c62a, 12)       \
    S(F, c, d, a, b, 6, 0xa8304613, 17)  S(F, b, c, d, a, 7, 0xfd469501, 22)       \
    S(F, a, b, c, d, 8, 0x698098d8, 7)   S(F, d, a, b, c, 9, 0x8b44f7af, 12)       \
    S(F, c, d, a, b, 10, 0xffff5bb1, 17) S(F, b, c, d, a, 11, 0x895cd7be, 22)      \
    S(F, a, b, c, d, 12, 0x6b901122, 7)  S(F, d, a, b, c, 13, 0xfd987193, 12)      \
    S(F, c, d, a, b, 14, 0xa679438e, 17) S(F, b, c, d, a, 15, 0x49b40821, 22)      \
    S(G, a, b, c, d, 1, 0xf61e2562, 5)   S(G, d, a, b, c, 6, 0xc040b340, 9)        \
    S(G, c, d, a, b, 11, 0x265e5a51, 14) S(G, b, c, d, a, 0, 0xe9b6c7aa, 20)       \
    S(G, a, b, c, d, 5, 0xd62f105d, 5)   S(G, d, a, b, c, 10, 0x02441453, 9)       \
    S(G, c, d, a, b, 15, 0xd8a1e681, 14) S(G, b, c, d, a, 4, 0xe7d3fbc8, 20)       \
    S(G, a, b, c, d, 9, 0x21e1cde6, 5)   S(G, d, a, b, c, 14, 0xc33707d6, 9)       \
    S(G, c, d, a, b, 3, 0xf4d50d87, 14)  S(G, b, c, d, a, 8, 0x455a14ed, 20)       \
    S(G, a, b, c, d, 13, 0xa9e3e905, 5)  S(G, d, a, b, c, 2, 0xfcefa3f8, 9)        \
    S(G, c, d, a, b, 7, 0x676f02d9, 14)  S(G, b, c, d, a, 12, 0x8d2a4c8a, 20)      \
    S(H, a, b, c, d, 5, 0xfffa3942, 4)   S(H, d, a, b, c, 8, 0x8771f681, 11)       \
    S(H, c, d, a, b, 11, 0x6d9d6122, 16) S(H, b, c, d, a, 14, 0xfde5380c, 23)      \
    S(H, a, b, c, d, 1, 0xa4beea44, 4)   S(H, d, a, b, c, 4, 0x4bdecfa9, 11)       \
    S(H, c, d, a, b, 7, 0xf6bb4b60, 16)  S(H, b, c, d, a, 10, 0xbebfbc70, 23)      \
    S(H, a, b, c, d, 13, 0x289b7ec6, 4)  S(H, d, a, b, c, 0, 0xeaa127fa, 11)       \
    S(H, c, d, a, b, 3, 0xd4ef3085, 16)  S(H, b, c, d, a, 6, 0x04881d05, 23)       \
    S(H, a, b, c, d, 9, 0xd9d4d039, 4)   S(H, d, a, b, c, 12, 0xe6db99e5, 11)      \
    S(H, c, d, a, b, 15, 0x1fa27cf8, 16) S(H, b, c, d, a, 2, 0xc4ac5665, 23)       \
    S(I, a, b, c, d, 0, 0xf4292244, 6)   S(I, d, a, b, c, 7, 0x432aff97, 10)       \
    S(I, c, d, a, b, 14, 0xab9423a7, 15) S(I, b, c, d, a, 5, 0xfc93a039, 21)       \
    S(I, a, b, c, d, 12, 0x655b59c3, 6)  S(I, d, a, b, c, 3, 0x8f0ccc92, 10)       \
    S(I, c, d, a, b, 10, 0xffeff47d, 15) S(I, b, c, d, a, 1, 0x85845dd1, 21)       \
    S(I, a, b, c, d, 8, 0x6fa87e4f, 6)   S(I, d, a, b, c, 15, 0xfe2ce6e0, 10)      \
    S(I, c, d, a, b, 6, 0xa3014314, 15)  S(I, b, c, d, a, 13, 0x4e0811a1, 21)      \
    S(I, a, b, c, d, 4, 0xf7537e82, 6)   S(I, d, a, b, c, 11, 0xbd3af235, 10)      \
    S(I, c, d, a, b, 2, 0x2ad7d2bb, 15)  S(I, b, c, d, a, 9, 0xeb86d391, 21)

/* ---- one stream ------------------------------------------------------------------- */

#define SF(b, c, d) ((d) ^ ((b) & ((c) ^ (d))))
#define SG(b, c, d) ((c) ^ ((d) & ((b) ^ (c))))
#define SH(b, c, d) ((b) ^ (c) ^ (d))
#define SI(b, c, d) ((c) ^ ((b) | ~(d)))
#define SROTL(x, s) (((x) << (s)) | ((x) >> (32 - (s))))
#define SSTEP(f, a, b, c, d, k, t, s) \
    a += f(b, c, d) + m[k] + (uint32_t)(t); a = SROTL(a, s); a += b;

static inline uint32_t
load_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void
md5_blocks(uint32_t h[4], const unsigned char *p, size_t nblocks)
{
    for (; nblocks; nblocks--, p += BLOCK) {
        uint32_t m[16];
        for (int i = 0; i < 16; i++) {
            m[i] = load_le32(p + 4 * i);
        }
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
        MD5_STEPS(SSTEP, SF, SG, SH, SI)
        h[0] += a; h[1] += b; h[2] += c; h[3] += d;
    }
}

/* ---- eight streams, AVX2 ------------------------------------------------------------ */

#ifdef MD5LANES_X86
#define VF(b, c, d) _mm256_xor_si256(d, _mm256_and_si256(b, _mm256_xor_si256(c, d)))
#define VG(b, c, d) _mm256_xor_si256(c, _mm256_and_si256(d, _mm256_xor_si256(b, c)))
#define VH(b, c, d) _mm256_xor_si256(_mm256_xor_si256(b, c), d)
#define VI(b, c, d) _mm256_xor_si256(c, _mm256_or_si256(b, _mm256_xor_si256(d, ones)))
#define VSTEP(f, a, b, c, d, k, t, s)                                                   \
    a = _mm256_add_epi32(a, _mm256_add_epi32(f(b, c, d),                               \
                            _mm256_add_epi32(m[k], _mm256_set1_epi32((int)(t)))));    \
    a = _mm256_or_si256(_mm256_slli_epi32(a, s), _mm256_srli_epi32(a, 32 - (s)));      \
    a = _mm256_add_epi32(a, b);

/* Words `first`..`first + 7` of each lane's block, turned so that out[j] holds word
   first + j of lanes 0..7. */
__attribute__((target("avx2"))) static inline void
transpose8(const unsigned char *const p[LANES], int first, __m256i out[8])
{
    __m256i r[8], t[8], u[8];
    for (int i = 0; i < 8; i++) {
        r[i] = _mm256_loadu_si256((const __m256i *)(p[i] + 4 * first));
    }
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int j = 0; j < 4; j++) {
        out[j] = _mm256_permute2x128_si256(u[j], u[j + 4], 0x20);
        out[j + 4] = _mm256_permute2x128_si256(u[j], u[j + 4], 0x31);
    }
}

/* `nblocks` blocks of each of eight streams; a lane whose `step` is 0 rereads one block
   and its result is thrown away by the caller. */
__attribute__((target("avx2"))) static void
md5_blocks_x8(uint32_t h[LANES][4], const unsigned char *p[LANES], const size_t step[LANES],
              size_t nblocks)
{
    const __m256i ones = _mm256_set1_epi32(-1);
    __m256i sa = _mm256_setr_epi32((int)h[0][0], (int)h[1][0], (int)h[2][0], (int)h[3][0],
                                   (int)h[4][0], (int)h[5][0], (int)h[6][0], (int)h[7][0]);
    __m256i sb = _mm256_setr_epi32((int)h[0][1], (int)h[1][1], (int)h[2][1], (int)h[3][1],
                                   (int)h[4][1], (int)h[5][1], (int)h[6][1], (int)h[7][1]);
    __m256i sc = _mm256_setr_epi32((int)h[0][2], (int)h[1][2], (int)h[2][2], (int)h[3][2],
                                   (int)h[4][2], (int)h[5][2], (int)h[6][2], (int)h[7][2]);
    __m256i sd = _mm256_setr_epi32((int)h[0][3], (int)h[1][3], (int)h[2][3], (int)h[3][3],
                                   (int)h[4][3], (int)h[5][3], (int)h[6][3], (int)h[7][3]);
    const unsigned char *q[LANES];
    memcpy(q, p, sizeof(q));
    for (; nblocks; nblocks--) {
        __m256i m[16];
        transpose8(q, 0, m);
        transpose8(q, 8, m + 8);
        __m256i a = sa, b = sb, c = sc, d = sd;
        MD5_STEPS(VSTEP, VF, VG, VH, VI)
        sa = _mm256_add_epi32(sa, a);
        sb = _mm256_add_epi32(sb, b);
        sc = _mm256_add_epi32(sc, c);
        sd = _mm256_add_epi32(sd, d);
        for (int i = 0; i < LANES; i++) {
            q[i] += step[i];
        }
    }
    uint32_t out[4][LANES];
    _mm256_storeu_si256((__m256i *)out[0], sa);
    _mm256_storeu_si256((__m256i *)out[1], sb);
    _mm256_storeu_si256((__m256i *)out[2], sc);
    _mm256_storeu_si256((__m256i *)out[3], sd);
    for (int i = 0; i < LANES; i++) {
        for (int w = 0; w < 4; w++) {
            h[i][w] = out[w][i];
        }
    }
}
#endif

static int have_avx2;

/* ---- the MD5 type -------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    uint32_t h[4];
    uint64_t length;              /* bytes added so far */
    unsigned char tail[BLOCK];    /* the bytes after the last whole block */
    size_t tail_len;
    int busy;                     /* being updated with the GIL released */
} MD5Object;

static PyTypeObject MD5Type;

/* Take bytes into the tail; hash it once it holds a whole block. Returns bytes taken. */
static size_t
absorb_tail(MD5Object *self, const unsigned char *data, size_t len)
{
    size_t take = BLOCK - self->tail_len;
    if (take > len) {
        take = len;
    }
    memcpy(self->tail + self->tail_len, data, take);
    self->tail_len += take;
    if (self->tail_len == BLOCK) {
        md5_blocks(self->h, self->tail, 1);
        self->tail_len = 0;
    }
    return take;
}

/* Count the bytes, fill the tail and keep what follows the last whole block in it; return
   the whole blocks in between (from *data on), which the caller hashes. */
static size_t
take_edges(MD5Object *self, const unsigned char **data, size_t len)
{
    self->length += len;
    if (self->tail_len) {
        size_t took = absorb_tail(self, *data, len);
        *data += took;
        len -= took;
        if (len == 0) {
            return 0;
        }
    }
    self->tail_len = len % BLOCK;
    memcpy(self->tail, *data + len - self->tail_len, self->tail_len);
    return len / BLOCK;
}

static void
update_one(MD5Object *self, const unsigned char *data, size_t len)
{
    size_t nblocks = take_edges(self, &data, len);
    md5_blocks(self->h, data, nblocks);
}

static int
claim(MD5Object *self)
{
    if (self->busy) {
        PyErr_SetString(PyExc_ValueError,
                        "this MD5 is already being updated (once per call, one thread at a time)");
        return -1;
    }
    self->busy = 1;
    return 0;
}

static PyObject *
MD5_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":MD5", kwlist)) {
        return NULL;
    }
    MD5Object *self = (MD5Object *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->h[0] = 0x67452301;
    self->h[1] = 0xefcdab89;
    self->h[2] = 0x98badcfe;
    self->h[3] = 0x10325476;
    return (PyObject *)self;
}

static PyObject *
MD5_update(MD5Object *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (claim(self) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (view.len >= 2048) {
        Py_BEGIN_ALLOW_THREADS
        update_one(self, view.buf, (size_t)view.len);
        Py_END_ALLOW_THREADS
    } else {
        update_one(self, view.buf, (size_t)view.len);
    }
    self->busy = 0;
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static void
finish(const MD5Object *self, unsigned char out[16])
{
    uint32_t h[4];
    unsigned char pad[2 * BLOCK] = {0};
    memcpy(h, self->h, sizeof(h));
    memcpy(pad, self->tail, self->tail_len);
    pad[self->tail_len] = 0x80;
    size_t total = self->tail_len + 1 + 8 <= BLOCK ? BLOCK : 2 * BLOCK;
    uint64_t bits = self->length * 8;
    for (int i = 0; i < 8; i++) {
        pad[total - 8 + i] = (unsigned char)(bits >> (8 * i));
    }
    md5_blocks(h, pad, total / BLOCK);
    for (int i = 0; i < 16; i++) {
        out[i] = (unsigned char)(h[i / 4] >> (8 * (i % 4)));
    }
}

static int
idle(const MD5Object *self)
{
    if (self->busy) {
        PyErr_SetString(PyExc_ValueError, "this MD5 is being updated in another thread");
        return 0;
    }
    return 1;
}

static PyObject *
MD5_digest(MD5Object *self, PyObject *Py_UNUSED(ignored))
{
    unsigned char out[16];
    if (!idle(self)) {
        return NULL;
    }
    finish(self, out);
    return PyBytes_FromStringAndSize((const char *)out, 16);
}

static PyObject *
MD5_hexdigest(MD5Object *self, PyObject *Py_UNUSED(ignored))
{
    static const char hex[] = "0123456789abcdef";
    unsigned char out[16];
    char text[32];
    if (!idle(self)) {
        return NULL;
    }
    finish(self, out);
    for (int i = 0; i < 16; i++) {
        text[2 * i] = hex[out[i] >> 4];
        text[2 * i + 1] = hex[out[i] & 15];
    }
    return PyUnicode_FromStringAndSize(text, 32);
}

static PyMethodDef MD5_methods[] = {
    {"update", (PyCFunction)MD5_update, METH_O, "Add the bytes of a buffer."},
    {"digest", (PyCFunction)MD5_digest, METH_NOARGS, "The 16-byte digest so far."},
    {"hexdigest", (PyCFunction)MD5_hexdigest, METH_NOARGS, "The digest so far, as hex."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject MD5Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "uploader.transfer._md5lanes.MD5",
    .tp_basicsize = sizeof(MD5Object),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "MD5 of one stream; update_lanes() adds to several at once.",
    .tp_new = MD5_new,
    .tp_methods = MD5_methods,
};

/* ---- several streams at once ----------------------------------------------------------- */

typedef struct {
    MD5Object *md5;
    const unsigned char *data;    /* the whole blocks still to hash */
    size_t nblocks;
} Lane;

static void
scalar_lanes(Lane *lanes, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        md5_blocks(lanes[i].md5->h, lanes[i].data, lanes[i].nblocks);
    }
}

#ifdef MD5LANES_X86
/* Eight slots; each takes the next stream when its own is done. A slot with nothing left
   runs on a block of zeros and its result is not kept. */
static void
simd_lanes(Lane *lanes, Py_ssize_t n)
{
    static const unsigned char zeros[BLOCK];
    uint32_t h[LANES][4];
    const unsigned char *p[LANES];
    size_t step[LANES], left[LANES];
    Py_ssize_t owner[LANES], next = 0;
    int live = 0;
    for (int s = 0; s < LANES; s++) {
        owner[s] = -1;
    }
    for (;;) {
        for (int s = 0; s < LANES; s++) {
            while (owner[s] < 0 && next < n) {
                if (lanes[next].nblocks) {
                    owner[s] = next;
                    memcpy(h[s], lanes[next].md5->h, sizeof(h[s]));
                    p[s] = lanes[next].data;
                    step[s] = BLOCK;
                    left[s] = lanes[next].nblocks;
                    live++;
                }
                next++;
            }
            if (owner[s] < 0) {
                p[s] = zeros;
                step[s] = 0;
                left[s] = SIZE_MAX;
            }
        }
        if (live == 0) {
            return;
        }
        if (live == 1 && next == n) {  /* the last stream alone: scalar is faster */
            for (int s = 0; s < LANES; s++) {
                if (owner[s] >= 0) {
                    md5_blocks(h[s], p[s], left[s]);
                    memcpy(lanes[owner[s]].md5->h, h[s], sizeof(h[s]));
                }
            }
            return;
        }
        size_t run = SIZE_MAX;
        for (int s = 0; s < LANES; s++) {
            if (left[s] < run) {
                run = left[s];
            }
        }
        md5_blocks_x8(h, p, step, run);
        for (int s = 0; s < LANES; s++) {
            if (owner[s] < 0) {
                continue;
            }
            p[s] += run * BLOCK;
            left[s] -= run;
            if (left[s] == 0) {
                memcpy(lanes[owner[s]].md5->h, h[s], sizeof(h[s]));
                owner[s] = -1;
                live--;
            }
        }
    }
}
#endif

static void
release_all(Lane *lanes, Py_buffer *views, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        lanes[i].md5->busy = 0;
        Py_DECREF(lanes[i].md5);
        PyBuffer_Release(&views[i]);
    }
}

static PyObject *
update_lanes(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *digests, *buffers;
    if (!PyArg_ParseTuple(args, "OO:update_lanes", &digests, &buffers)) {
        return NULL;
    }
    PyObject *ds = PySequence_Fast(digests, "digests must be a sequence");
    if (ds == NULL) {
        return NULL;
    }
    PyObject *bs = PySequence_Fast(buffers, "buffers must be a sequence");
    if (bs == NULL) {
        Py_DECREF(ds);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(ds), ready = 0;
    Lane *lanes = PyMem_Calloc(n ? n : 1, sizeof(Lane));
    Py_buffer *views = PyMem_Calloc(n ? n : 1, sizeof(Py_buffer));
    if (lanes == NULL || views == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (PySequence_Fast_GET_SIZE(bs) != n) {
        PyErr_SetString(PyExc_ValueError, "as many buffers as digests, please");
        goto done;
    }
    for (; ready < n; ready++) {
        PyObject *d = PySequence_Fast_GET_ITEM(ds, ready);
        if (!PyObject_TypeCheck(d, &MD5Type)) {
            PyErr_SetString(PyExc_TypeError, "digests must be uploader.transfer._md5lanes.MD5");
            goto done;
        }
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(bs, ready), &views[ready],
                               PyBUF_SIMPLE) < 0) {
            goto done;
        }
        if (claim((MD5Object *)d) < 0) {
            PyBuffer_Release(&views[ready]);
            goto done;
        }
        /* Owned until released: the GIL is let go while the lanes are hashed. */
        lanes[ready].md5 = (MD5Object *)Py_NewRef(d);
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        lanes[i].data = views[i].buf;
        lanes[i].nblocks = take_edges(lanes[i].md5, &lanes[i].data, (size_t)views[i].len);
    }
#ifdef MD5LANES_X86
    if (have_avx2 && n > 1) {
        simd_lanes(lanes, n);
    } else {
        scalar_lanes(lanes, n);
    }
#else
    scalar_lanes(lanes, n);
#endif
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    if (lanes != NULL && views != NULL) {
        release_all(lanes, views, ready);
    }
    PyMem_Free(lanes);
    PyMem_Free(views);
    Py_DECREF(ds);
    Py_DECREF(bs);
    return result;
}

static PyMethodDef module_methods[] = {
    {"update_lanes", update_lanes, METH_VARARGS,
     "update_lanes(digests, buffers): add buffers[i] to digests[i], all at once."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "uploader.transfer._md5lanes",
    .m_doc = "MD5 of several streams at once, one per SIMD lane.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__md5lanes(void)
{
#ifdef MD5LANES_X86
    __builtin_cpu_init();
    have_avx2 = __builtin_cpu_supports("avx2");
#endif
    if (PyType_Ready(&MD5Type) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "MD5", (PyObject *)&MD5Type) < 0 ||
        PyModule_AddStringConstant(module, "KERNEL", have_avx2 ? "avx2x8" : "scalar") < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
