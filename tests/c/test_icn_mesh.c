/* The C API against the real static library and the generated header: a local run of the echo
 * contract, refusals with their codes, device-state decisions with partial updates, NULL pointers
 * and invalid UTF-8 as error returns. Run under valgrind by scripts/test-bindings.sh.
 *
 * usage: test_icn_mesh DATA_DIR ECHO_WASM */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "icn_mesh.h"

static int failures = 0;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (!(cond)) {                                     \
            fprintf(stderr, "FAIL line %d: ", __LINE__);   \
            fprintf(stderr, __VA_ARGS__);                  \
            fprintf(stderr, "\n");                         \
            failures++;                                    \
        }                                                  \
    } while (0)

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n);
    *len = fread(buf, 1, (size_t)n, f);
    fclose(f);
    return buf;
}

/* Sets the state, checks the return code and that the decision JSON contains `expect`. */
static void decide(IcnNode *node, const char *state, int32_t code, const char *expect) {
    char *out = NULL;
    int32_t rc = icn_node_set_device_state(node, state, &out);
    CHECK(rc == code, "set_device_state(%s) returned %d, expected %d (%s)", state, rc, code, out ? out : "NULL");
    CHECK(out && strstr(out, expect), "set_device_state(%s) gave %s, expected it to contain %s", state,
          out ? out : "NULL", expect);
    icn_string_free(out);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s DATA_DIR ECHO_WASM\n", argv[0]);
        return 2;
    }
    CHECK(strcmp(icn_version(), "0.1.0") == 0, "version %s", icn_version());

    /* Opening: errors first. */
    IcnNode *node = (IcnNode *)1;
    char *err = NULL;
    CHECK(icn_node_open(NULL, &node, &err) == 2, "NULL data_dir is an error");
    CHECK(node == NULL, "no node on error");
    CHECK(err && strstr(err, "\"J001\"") && strstr(err, "data_dir is NULL"), "error JSON: %s", err ? err : "NULL");
    icn_string_free(err);
    err = NULL;
    CHECK(icn_node_open("/proc/icn-cannot-be-here", &node, &err) == 2, "an unwritable directory is an error");
    CHECK(err && strstr(err, "\"J009\""), "error JSON: %s", err ? err : "NULL");
    icn_string_free(err);
    const char bad_utf8[] = {'/', 't', 'm', 'p', '/', (char)0xff, (char)0xfe, 0};
    err = NULL;
    CHECK(icn_node_open(bad_utf8, &node, &err) == 2, "invalid UTF-8 is an error");
    CHECK(err && strstr(err, "UTF-8"), "error JSON: %s", err ? err : "NULL");
    icn_string_free(err);
    CHECK(icn_node_open(argv[1], NULL, NULL) == 2, "a NULL out pointer is an error, not a crash");

    err = NULL;
    CHECK(icn_node_open(argv[1], &node, &err) == 0, "open %s: %s", argv[1], err ? err : "");
    CHECK(err == NULL, "no error string on success");
    if (!node) return 1;

    /* A local run of the echo contract. */
    size_t module_len = 0;
    unsigned char *module = read_file(argv[2], &module_len);
    CHECK(module != NULL && module_len > 0, "read %s", argv[2]);
    const char *spec = "{\"runtime\": {\"type\": \"CCL\", \"contract\": \"\", \"args\": \"hello from C\"},"
                       " \"budget\": {\"max_total\": 1}}";
    char *result = NULL;
    int32_t rc = icn_run_local(node, spec, module, module_len, NULL, 0, &result);
    CHECK(rc == 0, "run_local returned %d: %s", rc, result ? result : "NULL");
    CHECK(result && strstr(result, "\"status\":\"completed\""), "report: %s", result ? result : "NULL");
    CHECK(result && strstr(result, "\"result_cid\":\"bafyrei"), "a signed result record: %s", result ? result : "");
    icn_string_free(result);

    /* Input given explicitly: the echo contract returns it. */
    const unsigned char input[] = "bytes from C";
    result = NULL;
    rc = icn_run_local(node, "{\"runtime\": {\"type\": \"WASM\"}, \"budget\": {\"max_total\": 1}}", module,
                       module_len, input, sizeof input - 1, &result);
    CHECK(rc == 0, "run_local with input returned %d: %s", rc, result ? result : "NULL");
    icn_string_free(result);

    /* Refusals: a spec with no budget (J002), bad JSON (J001), malformed WASM (J001). */
    result = NULL;
    rc = icn_run_local(node, "{\"runtime\": {\"type\": \"WASM\"}}", module, module_len, NULL, 0, &result);
    CHECK(rc == 2 && result && strstr(result, "\"J002\"") && strstr(result, "\"refused\""), "no budget: %d %s", rc,
          result ? result : "NULL");
    icn_string_free(result);
    result = NULL;
    rc = icn_run_local(node, "{not json", module, module_len, NULL, 0, &result);
    CHECK(rc == 2 && result && strstr(result, "\"J001\""), "bad JSON: %d %s", rc, result ? result : "NULL");
    icn_string_free(result);
    const unsigned char junk[] = {0, 'a', 's', 'm', 9, 9, 9, 9};
    result = NULL;
    rc = icn_run_local(node, "{\"runtime\": {\"type\": \"WASM\"}, \"budget\": {\"max_total\": 1}}", junk, sizeof junk,
                       NULL, 0, &result);
    CHECK(rc == 2 && result && strstr(result, "\"J001\""), "malformed module: %d %s", rc, result ? result : "NULL");
    icn_string_free(result);

    /* NULL pointers everywhere: error returns. */
    result = NULL;
    CHECK(icn_run_local(NULL, spec, module, module_len, NULL, 0, &result) == 2, "NULL node");
    CHECK(result && strstr(result, "node is NULL"), "NULL node message: %s", result ? result : "NULL");
    icn_string_free(result);
    CHECK(icn_run_local(node, NULL, module, module_len, NULL, 0, NULL) == 2, "NULL spec, NULL out");
    CHECK(icn_run_local(node, spec, NULL, 5, NULL, 0, NULL) == 2, "NULL module with a length");
    CHECK(icn_node_set_device_state(NULL, "{}", NULL) == 2, "NULL node");
    CHECK(icn_node_set_device_state(node, NULL, NULL) == 2, "NULL state");

    /* The device policy: defaults, then partial updates. */
    decide(node, "{}", 0, "\"decision\":\"pause\"");
    decide(node, "{\"charging\": true, \"battery_percent\": 95}", 0, "\"decision\":\"run\"");
    decide(node, "{\"screen_on\": true}", 0, "screen on");
    decide(node, "{\"screen_on\": false}", 0, "\"decision\":\"run\"");
    decide(node, "{\"thermal\": \"severe\"}", 0, "\"decision\":\"stop\"");
    decide(node, "{\"thermal\": \"lukewarm\"}", 2, "\"J001\"");
    decide(node, "{\"battery_percent\": 140}", 2, "battery_percent");
    decide(node, "[1, 2]", 2, "\"J001\"");
    decide(node, bad_utf8, 2, "UTF-8");

    icn_node_close(node);
    icn_node_close(NULL);
    icn_string_free(NULL);
    free(module);
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("C API: all checks passed\n");
    return 0;
}
