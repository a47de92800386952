/* icn_guest.h — the guest ABI of icn-mesh for WebAssembly jobs written in C.
 *
 * Build:  clang-14 --target=wasm32 -O2 -nostdlib -ffreestanding -Wl,--no-entry -Wl,--export=run job.c
 * The module exports `memory` (lld does by default) and `int run(void)`: 0 = success, anything else is
 * the job's own failure code. No libc, no WASI, no clock, no randomness: the input is the only thing a
 * job can read, so its output is the same on every node.
 */
#ifndef ICN_GUEST_H
#define ICN_GUEST_H

#include <stddef.h>
#include <stdint.h>

#if defined(__wasm__)
#define ICN_IMPORT(name) __attribute__((import_module("icn"), import_name(#name)))

/* Total input bytes. */
ICN_IMPORT(input_len) int32_t icn_input_len(void);
/* Copies input[offset..offset+len] to dst; returns bytes copied (0 at the end), -1 if dst is outside memory. */
ICN_IMPORT(get_input) int32_t icn_get_input(void *dst, int32_t offset, int32_t len);
/* Appends len bytes at src to the output; 0 ok, -1 bad pointer. Past the node's output cap the job stops. */
ICN_IMPORT(put_output) int32_t icn_put_output(const void *src, int32_t len);
/* Logs a line: level 0=trace, 1=debug, 2=info, 3=warn, 4=error. The host keeps a limited volume. */
ICN_IMPORT(log) void icn_log(int32_t level, const char *ptr, int32_t len);
/* Reports progress, 0..1000 (per mille); only increases count. */
ICN_IMPORT(progress) void icn_progress(int32_t permille);

/* ---- the compiler may call memcpy/memset even without libc ---- */

__attribute__((weak)) void *memcpy(void *dst, const void *src, size_t n) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--) *d++ = *s++;
    return dst;
}

__attribute__((weak)) void *memset(void *dst, int c, size_t n) {
    unsigned char *d = dst;
    while (n--) *d++ = (unsigned char)c;
    return dst;
}

/* A bump allocator over memory grown on demand; returns 0 when the host refuses more memory. */
extern unsigned char __heap_base;
static uintptr_t icn_heap_top;

static inline void *icn_alloc(size_t n) {
    if (!icn_heap_top) icn_heap_top = (uintptr_t)&__heap_base;
    uintptr_t start = (icn_heap_top + 15) & ~(uintptr_t)15;
    uintptr_t end = start + n;
    uintptr_t have = __builtin_wasm_memory_size(0) * 65536u;
    if (end > have) {
        uintptr_t pages = (end - have + 65535u) / 65536u;
        if (__builtin_wasm_memory_grow(0, pages) == (size_t)-1) return 0;
    }
    icn_heap_top = end;
    return (void *)start;
}

#else
/* A native build (the wasmi-vs-native benchmark): a host shim provides the same functions. */
#include <string.h>
int32_t icn_input_len(void);
int32_t icn_get_input(void *dst, int32_t offset, int32_t len);
int32_t icn_put_output(const void *src, int32_t len);
void icn_log(int32_t level, const char *ptr, int32_t len);
void icn_progress(int32_t permille);
void *icn_alloc(size_t n);
#endif

static inline size_t icn_strlen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

static inline void icn_log_str(int32_t level, const char *s) { icn_log(level, s, (int32_t)icn_strlen(s)); }

static inline void icn_put_str(const char *s) { icn_put_output(s, (int32_t)icn_strlen(s)); }

/* Writes v in decimal to buf (at least 21 bytes); returns the length. */
static inline int icn_fmt_u64(char *buf, uint64_t v) {
    char tmp[21];
    int n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    for (int i = 0; i < n; i++) buf[i] = tmp[n - 1 - i];
    return n;
}

/* Reads the whole input into a new buffer (NUL-terminated); *len gets its size. 0 on failure. */
static inline char *icn_read_all(int32_t *len) {
    int32_t n = icn_input_len();
    char *buf = icn_alloc((size_t)n + 1);
    if (!buf) return 0;
    int32_t got = 0;
    while (got < n) {
        int32_t r = icn_get_input(buf + got, got, n - got);
        if (r <= 0) return 0;
        got += r;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* Parses up to max unsigned decimal numbers from text; returns how many were found. */
static inline int icn_parse_u64s(const char *text, uint64_t *out, int max) {
    int count = 0;
    while (*text && count < max) {
        while (*text && (*text < '0' || *text > '9')) text++;
        if (!*text) break;
        uint64_t v = 0;
        while (*text >= '0' && *text <= '9') v = v * 10 + (uint64_t)(*text++ - '0');
        out[count++] = v;
    }
    return count;
}

#endif /* ICN_GUEST_H */
