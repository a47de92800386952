/* Host shim for running an example job natively (gcc -O2), for the wasmi-vs-native benchmark.
 * Usage: job INPUT_FILE  — runs `run()` once, prints "<elapsed ns> <output bytes> <exit code>". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int run(void);

static unsigned char *input;
static long input_len;
static long output_len;

int32_t icn_input_len(void) { return (int32_t)input_len; }
int32_t icn_get_input(void *dst, int32_t offset, int32_t len) {
    if (offset >= input_len) return 0;
    long n = input_len - offset < len ? input_len - offset : len;
    memcpy(dst, input + offset, (size_t)n);
    return (int32_t)n;
}
int32_t icn_put_output(const void *src, int32_t len) { (void)src; output_len += len; return 0; }
void icn_log(int32_t level, const char *ptr, int32_t len) { (void)level; (void)ptr; (void)len; }
void icn_progress(int32_t permille) { (void)permille; }
void *icn_alloc(size_t n) { return calloc(1, n); }

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    FILE *f = fopen(argv[1], "rb");
    if (!f) return 2;
    fseek(f, 0, SEEK_END);
    input_len = ftell(f);
    fseek(f, 0, SEEK_SET);
    input = malloc((size_t)input_len + 1);
    if (fread(input, 1, (size_t)input_len, f) != (size_t)input_len) return 2;
    fclose(f);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int code = run();
    clock_gettime(CLOCK_MONOTONIC, &b);
    long long ns = (long long)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec);
    printf("%lld %ld %d\n", ns, output_len, code);
    return 0;
}
