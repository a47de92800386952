/* Counts the primes up to N (the input, in decimal; 1000000 if empty) with a sieve of Eratosthenes.
 * Output: "<count> primes <= N, largest <p>\n". Reports progress as the sieve advances. */
#include "icn_guest.h"

int run(void) {
    int32_t len = 0;
    char *text = icn_read_all(&len);
    if (!text) return 2;
    uint64_t n = 1000000;
    uint64_t parsed[1];
    if (icn_parse_u64s(text, parsed, 1) == 1) n = parsed[0];
    if (n < 2 || n > 1000000000ull) {
        icn_log_str(4, "N must be between 2 and 1000000000");
        return 1;
    }
    /* composite[i] for odd numbers only: index i stands for 2*i+1. */
    uint64_t size = n / 2 + 1;
    unsigned char *composite = icn_alloc(size);
    if (!composite) {
        icn_log_str(4, "not enough memory for the sieve");
        return 3;
    }
    memset(composite, 0, size);
    uint64_t limit = 1;
    while ((limit + 1) * (limit + 1) <= n) limit++;
    int32_t last = -1;
    for (uint64_t p = 3; p <= limit; p += 2) {
        if (composite[p / 2]) continue;
        for (uint64_t m = p * p; m <= n; m += 2 * p) composite[m / 2] = 1;
        int32_t permille = (int32_t)(p * 900 / (limit + 1));
        if (permille != last) { icn_progress(permille); last = permille; }
    }
    uint64_t count = 1, largest = 2; /* the prime 2 */
    for (uint64_t i = 1; 2 * i + 1 <= n; i++) {
        if (!composite[i]) { count++; largest = 2 * i + 1; }
    }
    char out[96];
    int k = icn_fmt_u64(out, count);
    const char *mid = " primes <= ";
    for (const char *s = mid; *s; s++) out[k++] = *s;
    k += icn_fmt_u64(out + k, n);
    const char *lg = ", largest ";
    for (const char *s = lg; *s; s++) out[k++] = *s;
    k += icn_fmt_u64(out + k, largest);
    out[k++] = '\n';
    icn_progress(1000);
    return icn_put_output(out, k) == 0 ? 0 : 4;
}
