/* sha256 of the input, printed as 64 lowercase hex digits (the first field of `sha256sum`).
 * Streams the input in 64 KiB chunks, so memory stays flat however large the input is. */
#include "icn_guest.h"

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static uint32_t H[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

/* The message schedule is kept in 16 rolling words and the 64 rounds are unrolled 16 at a time, so
 * the compiler can hold the whole state in wasm locals instead of linear-memory stack slots: an
 * interpreter pays per instruction, and a load or store is an instruction. */
#define CH(e, f, g) (((e) & (f)) ^ (~(e) & (g)))
#define MAJ(a, b, c) (((a) & (b)) ^ ((a) & (c)) ^ ((b) & (c)))
#define S0(a) (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22))
#define S1(e) (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25))
#define s0(x) (ROTR(x, 7) ^ ROTR(x, 18) ^ ((x) >> 3))
#define s1(x) (ROTR(x, 17) ^ ROTR(x, 19) ^ ((x) >> 10))
#define ROUND(a, b, c, d, e, f, g, h, k, w)             \
    do {                                                \
        uint32_t t1 = h + S1(e) + CH(e, f, g) + k + w;  \
        uint32_t t2 = S0(a) + MAJ(a, b, c);             \
        d += t1;                                        \
        h = t1 + t2;                                    \
    } while (0)
#define EIGHT(i, w0, w1, w2, w3, w4, w5, w6, w7)      \
    ROUND(a, b, c, d, e, f, g, h, K[i + 0], w0);      \
    ROUND(h, a, b, c, d, e, f, g, K[i + 1], w1);      \
    ROUND(g, h, a, b, c, d, e, f, K[i + 2], w2);      \
    ROUND(f, g, h, a, b, c, d, e, K[i + 3], w3);      \
    ROUND(e, f, g, h, a, b, c, d, K[i + 4], w4);      \
    ROUND(d, e, f, g, h, a, b, c, K[i + 5], w5);      \
    ROUND(c, d, e, f, g, h, a, b, K[i + 6], w6);      \
    ROUND(b, c, d, e, f, g, h, a, K[i + 7], w7)
#define EXPAND(w0, w1, w9, w14) (w0 += s1(w14) + w9 + s0(w1))

static void compress(const unsigned char *p) {
#define LOAD(i) ((uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3])
    uint32_t w0 = LOAD(0), w1 = LOAD(1), w2 = LOAD(2), w3 = LOAD(3), w4 = LOAD(4), w5 = LOAD(5), w6 = LOAD(6),
             w7 = LOAD(7), w8 = LOAD(8), w9 = LOAD(9), w10 = LOAD(10), w11 = LOAD(11), w12 = LOAD(12),
             w13 = LOAD(13), w14 = LOAD(14), w15 = LOAD(15);
    uint32_t a = H[0], b = H[1], c = H[2], d = H[3], e = H[4], f = H[5], g = H[6], h = H[7];
    for (int i = 0; i < 64; i += 16) {
        if (i > 0) {
            EXPAND(w0, w1, w9, w14); EXPAND(w1, w2, w10, w15); EXPAND(w2, w3, w11, w0); EXPAND(w3, w4, w12, w1);
            EXPAND(w4, w5, w13, w2); EXPAND(w5, w6, w14, w3); EXPAND(w6, w7, w15, w4); EXPAND(w7, w8, w0, w5);
            EXPAND(w8, w9, w1, w6); EXPAND(w9, w10, w2, w7); EXPAND(w10, w11, w3, w8); EXPAND(w11, w12, w4, w9);
            EXPAND(w12, w13, w5, w10); EXPAND(w13, w14, w6, w11); EXPAND(w14, w15, w7, w12);
            EXPAND(w15, w0, w8, w13);
        }
        EIGHT(i, w0, w1, w2, w3, w4, w5, w6, w7);
        EIGHT(i + 8, w8, w9, w10, w11, w12, w13, w14, w15);
    }
    H[0] += a; H[1] += b; H[2] += c; H[3] += d; H[4] += e; H[5] += f; H[6] += g; H[7] += h;
#undef LOAD
}

#define CHUNK 65536
static unsigned char chunk[CHUNK + 128];

int run(void) {
    int32_t total = icn_input_len();
    int32_t offset = 0;
    uint64_t bits = (uint64_t)total * 8;
    for (;;) {
        int32_t n = icn_get_input(chunk, offset, CHUNK);
        if (n < 0) return 2;
        if (n < CHUNK) {
            /* Last (possibly empty) chunk: pad it in place. */
            int32_t full = n & ~63;
            for (int32_t i = 0; i < full; i += 64) compress(chunk + i);
            unsigned char *tail = chunk + full;
            int32_t rest = n - full;
            tail[rest++] = 0x80;
            int32_t padded = rest <= 56 ? 64 : 128;
            while (rest < padded - 8) tail[rest++] = 0;
            for (int i = 7; i >= 0; i--) tail[rest++] = (unsigned char)(bits >> (8 * i));
            compress(tail);
            if (padded == 128) compress(tail + 64);
            break;
        }
        for (int32_t i = 0; i < CHUNK; i += 64) compress(chunk + i);
        offset += n;
        if (total > 0) icn_progress((int32_t)((int64_t)offset * 1000 / total));
    }
    static const char hexdigits[] = "0123456789abcdef";
    char out[64];
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++) out[i * 8 + j] = hexdigits[(H[i] >> (28 - 4 * j)) & 15];
    icn_progress(1000);
    return icn_put_output(out, 64) == 0 ? 0 : 3;
}
