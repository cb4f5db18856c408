/*
 * model_check.c: the structural check of an uploaded Hugging Face model directory - tar
 * headers (ustar prefix, base-256 sizes, checksums, the end block), pax and member names
 * (path tricks, links, devices, subdirectories), config.json, safetensors headers (dtype x
 * shape = bytes, exact tiling of the data, bounds, overflow, huge headers), the index and
 * the whole-directory verdict, with the true parameter count.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_check.h"

static char err[512];

/* A ustar header block for name (prefix split when given), size, type. */
static void tar_block(unsigned char *blk, const char *prefix, const char *name, uint64_t size,
                      char type)
{
    unsigned sum = 0;
    int i;

    memset(blk, 0, 512);
    memcpy(blk, name, strlen(name));
    memcpy(blk + 100, "0000644", 7);
    snprintf((char *)blk + 124, 12, "%011llo", (unsigned long long)size);
    blk[156] = (unsigned char)type;
    memcpy(blk + 257,
           "ustar\0"
           "00",
           8);
    if (prefix)
        memcpy(blk + 345, prefix, strlen(prefix));
    memset(blk + 148, ' ', 8);
    for (i = 0; i < 512; i++)
        sum += blk[i];
    snprintf((char *)blk + 148, 8, "%06o", sum);
}

static void test_tar_header(void **state)
{
    unsigned char blk[512];
    struct gw_mc_tar_hdr h;

    (void)state;
    tar_block(blk, NULL, "./config.json", 1234, '0');
    assert_int_equal(gw_mc_tar_header(blk, &h, err, sizeof(err)), 1);
    assert_string_equal(h.name, "./config.json");
    assert_int_equal(h.size, 1234);
    assert_int_equal(h.type, '0');

    tar_block(blk, "some/long/dir", "model.safetensors", 5, '0');
    assert_int_equal(gw_mc_tar_header(blk, &h, err, sizeof(err)), 1);
    assert_string_equal(h.name, "some/long/dir/model.safetensors");

    memset(blk, 0, sizeof(blk));
    assert_int_equal(gw_mc_tar_header(blk, &h, err, sizeof(err)), 0);

    tar_block(blk, NULL, "a", 1, '0');
    blk[0] = 'b'; /* checksum no longer matches */
    assert_int_equal(gw_mc_tar_header(blk, &h, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not a tar"));

    /* gzip bytes are not a tar */
    memset(blk, 0, sizeof(blk));
    blk[0] = 0x1f;
    blk[1] = 0x8b;
    assert_int_equal(gw_mc_tar_header(blk, &h, err, sizeof(err)), -1);
}

static void test_tar_base256_size(void **state)
{
    unsigned char blk[512];
    struct gw_mc_tar_hdr h;
    unsigned sum = 0;
    int i;

    (void)state;
    tar_block(blk, NULL, "big.safetensors", 0, '0');
    memset(blk + 124, 0, 12);
    blk[124] = 0x80;
    blk[135] = 0x02; /* 2 bytes? no: 0x80 then ... 0x02 at the end = 2 */
    blk[134] = 0x01; /* 0x0102 = 258 */
    memset(blk + 148, ' ', 8);
    for (i = 0; i < 512; i++)
        sum += blk[i];
    snprintf((char *)blk + 148, 8, "%06o", sum);
    assert_int_equal(gw_mc_tar_header(blk, &h, err, sizeof(err)), 1);
    assert_int_equal(h.size, 258);
    /* a negative base-256 number is refused */
    blk[124] = 0xff;
    sum = 0;
    memset(blk + 148, ' ', 8);
    for (i = 0; i < 512; i++)
        sum += blk[i];
    snprintf((char *)blk + 148, 8, "%06o", sum);
    assert_int_equal(gw_mc_tar_header(blk, &h, err, sizeof(err)), -1);
}

static void test_pax_path(void **state)
{
    char path[64];
    const char good[] = "30 mtime=1700000000.123456789\n30 path=dir/model.safetensors\n";
    const char none[] = "30 mtime=1700000000.123456789\n";

    (void)state;
    assert_int_equal(gw_mc_pax_path(good, strlen(good), path, sizeof(path), err, sizeof(err)), 1);
    assert_string_equal(path, "dir/model.safetensors");
    assert_int_equal(gw_mc_pax_path(none, strlen(none), path, sizeof(path), err, sizeof(err)), 0);
    assert_int_equal(gw_mc_pax_path("99 path=x\n", 10, path, sizeof(path), err, sizeof(err)), -1);
    assert_int_equal(gw_mc_pax_path("9 pathx\n", 8, path, sizeof(path), err, sizeof(err)), -1);
    assert_int_equal(gw_mc_pax_path("x", 1, path, sizeof(path), err, sizeof(err)), -1);
    /* a path longer than the caller's buffer */
    assert_int_equal(gw_mc_pax_path(good, strlen(good), path, 8, err, sizeof(err)), -1);
}

static void test_member_names(void **state)
{
    char out[GW_MC_NAME_MAX + 1];

    (void)state;
    assert_int_equal(gw_mc_member("./config.json", '0', out, sizeof(out), err, sizeof(err)), 1);
    assert_string_equal(out, "config.json");
    assert_int_equal(gw_mc_member("tokenizer.json", '\0', out, sizeof(out), err, sizeof(err)), 1);
    assert_string_equal(out, "tokenizer.json");
    assert_int_equal(gw_mc_member("./", '5', out, sizeof(out), err, sizeof(err)), 0);
    assert_int_equal(gw_mc_member("onnx/model.onnx", '0', out, sizeof(out), err, sizeof(err)), 0);
    assert_int_equal(gw_mc_member("x", 'g', out, sizeof(out), err, sizeof(err)), 0);
    assert_int_equal(gw_mc_member("../etc/passwd", '0', out, sizeof(out), err, sizeof(err)), -1);
    assert_int_equal(gw_mc_member("a/../../b", '0', out, sizeof(out), err, sizeof(err)), -1);
    assert_int_equal(gw_mc_member("./..", '0', out, sizeof(out), err, sizeof(err)), -1);
    assert_int_equal(gw_mc_member("/etc/passwd", '0', out, sizeof(out), err, sizeof(err)), -1);
    assert_int_equal(gw_mc_member("config.json", '2', out, sizeof(out), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "links"));
    assert_int_equal(gw_mc_member("config.json", '1', out, sizeof(out), err, sizeof(err)), -1);
    assert_int_equal(gw_mc_member("dev", '3', out, sizeof(out), err, sizeof(err)), -1);
    assert_int_equal(gw_mc_member("a\nb", '0', out, sizeof(out), err, sizeof(err)), -1);
    assert_int_equal(gw_mc_member("a\\..\\b", '0', out, sizeof(out), err, sizeof(err)), -1);
    /* "..x" is a name, not a parent */
    assert_int_equal(gw_mc_member("..x", '0', out, sizeof(out), err, sizeof(err)), 1);
}

static void test_add_twice_and_bounds(void **state)
{
    struct gw_mc mc;
    char name[32];
    int i;

    (void)state;
    gw_mc_init(&mc);
    assert_int_equal(gw_mc_add(&mc, "config.json", 512, 10, err, sizeof(err)), 0);
    assert_int_equal(gw_mc_add(&mc, "config.json", 2048, 10, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "twice"));
    for (i = 1; i < GW_MC_MAX_FILES; i++) {
        snprintf(name, sizeof(name), "f%d", i);
        assert_int_equal(gw_mc_add(&mc, name, 0, 0, err, sizeof(err)), 0);
    }
    assert_int_equal(gw_mc_add(&mc, "one-more", 0, 0, err, sizeof(err)), -1);
    assert_non_null(gw_mc_find(&mc, "f7"));
    assert_null(gw_mc_find(&mc, "f9999"));
}

static const char llama_config[] =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", "
    "\"vocab_size\": 8, \"hidden_size\": 4, \"num_hidden_layers\": 1}";

static void test_config(void **state)
{
    struct gw_mc mc;

    (void)state;
    gw_mc_init(&mc);
    assert_int_equal(gw_mc_config(&mc, llama_config, strlen(llama_config), err, sizeof(err)), 0);
    assert_string_equal(mc.model_type, "llama");
    assert_int_equal(mc.vocab_size, 8);
    assert_int_equal(mc.hidden_size, 4);

    gw_mc_init(&mc);
    assert_int_equal(
        gw_mc_config(&mc, "{\"model_type\": \"gpt2\", \"n_embd\": 6}", 35, err, sizeof(err)), 0);
    assert_int_equal(mc.hidden_size, 6);

    gw_mc_init(&mc);
    assert_int_equal(gw_mc_config(&mc, "[]", 2, err, sizeof(err)), -1);
    assert_int_equal(gw_mc_config(&mc, "{\"a\":1}", 7, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "model_type"));
    assert_int_equal(gw_mc_config(&mc, "{\"model_type\":\"bert\"}", 21, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "bert"));
    assert_int_equal(
        gw_mc_config(&mc, "{\"model_type\":\"llama\",\"vocab_size\":1.5}", 39, err, sizeof(err)),
        -1);
    assert_non_null(strstr(err, "vocab_size"));
    assert_int_equal(
        gw_mc_config(&mc, "{\"model_type\":\"llama\",\"architectures\":[3]}", 42, err, sizeof(err)),
        -1);
    assert_false(mc.config);
}

/* embed [8,4] F32 (128 bytes) then norm [4] BF16 (8 bytes): 136 bytes of data */
static const char st_good[] =
    "{\"__metadata__\": {\"format\": \"pt\"},"
    " \"model.embed_tokens.weight\": {\"dtype\": \"F32\", \"shape\": [8, 4],"
    " \"data_offsets\": [0, 128]},"
    " \"model.norm.weight\": {\"dtype\": \"BF16\", \"shape\": [4], \"data_offsets\": [128, 136]}}";

static int st(struct gw_mc *mc, const char *hdr, uint64_t data)
{
    return gw_mc_safetensors(mc, "model.safetensors", hdr, strlen(hdr), data, err, sizeof(err));
}

static void test_safetensors_good(void **state)
{
    struct gw_mc mc;

    (void)state;
    gw_mc_init(&mc);
    assert_int_equal(gw_mc_config(&mc, llama_config, strlen(llama_config), err, sizeof(err)), 0);
    assert_int_equal(st(&mc, st_good, 136), 0);
    assert_int_equal(mc.params, 36);
    assert_int_equal(mc.tensors, 2);
    assert_true(mc.embedding);
    /* a second shard adds up */
    assert_int_equal(st(&mc,
                        "{\"lm_head.weight\": {\"dtype\": \"F16\", \"shape\": [8, 4],"
                        " \"data_offsets\": [0, 64]}}",
                        64),
                     0);
    assert_int_equal(mc.params, 68);
    assert_int_equal(mc.st_files, 2);
    /* an empty tensor and no data */
    assert_int_equal(st(&mc,
                        "{\"e\": {\"dtype\": \"F32\", \"shape\": [0, 4], \"data_offsets\": "
                        "[0, 0]}}",
                        0),
                     0);
}

static void test_safetensors_bad(void **state)
{
    static const struct {
        const char *hdr;
        uint64_t data;
        const char *says;
    } cases[] = {
        {st_good, 140, "the file holds"},  /* trailing bytes no tensor owns */
        {st_good, 100, "out of the file"}, /* offsets past the data */
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 4]}}", 4, "takes 8"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8, "hole"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
         " \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
         8, "overlap"},
        {"{\"a\": {\"dtype\": \"Q4\", \"shape\": [2], \"data_offsets\": [0, 1]}}", 1, "dtype"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", 4, "shape"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1099511627776, 1099511627776],"
         " \"data_offsets\": [0, 4]}}",
         4, "impossibly"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 4]}}",
         4, "shape"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 0]}}", 4, "range"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4, "data_offsets"},
        {"{\"a\": 3}", 0, "not an object"},
        {"{\"__metadata__\": {\"x\": 1}}", 0, "__metadata__"},
        {"[1, 2]", 0, "not a JSON object"},
        {"{\"a\": ", 0, "not a JSON object"},
    };
    struct gw_mc mc;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        gw_mc_init(&mc);
        err[0] = '\0';
        assert_int_equal(st(&mc, cases[i].hdr, cases[i].data), -1);
        if (!strstr(err, cases[i].says))
            fail_msg("case %zu: %s (wanted %s)", i, err, cases[i].says);
        assert_int_equal(mc.st_files, 0);
    }
}

static void test_safetensors_header_len(void **state)
{
    unsigned char b[8] = {0};
    uint64_t n;

    (void)state;
    b[0] = 100;
    assert_int_equal(gw_mc_st_header_len("m.safetensors", b, 1000, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 100);
    assert_int_equal(gw_mc_st_header_len("m.safetensors", b, 50, &n, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "past the file"));
    assert_int_equal(gw_mc_st_header_len("m.safetensors", b, 5, &n, err, sizeof(err)), -1);
    memset(b, 0xff, sizeof(b)); /* 2^64 - 1 */
    assert_int_equal(gw_mc_st_header_len("m.safetensors", b, UINT64_MAX, &n, err, sizeof(err)), -1);
    memset(b, 0, sizeof(b));
    b[3] = 0x02; /* 32 MiB: over the bound */
    assert_int_equal(gw_mc_st_header_len("m.safetensors", b, UINT64_MAX, &n, err, sizeof(err)), -1);
}

/* A directory with config, tokenizer and one checked weights file. */
static void good_dir(struct gw_mc *mc)
{
    gw_mc_init(mc);
    assert_int_equal(gw_mc_add(mc, "config.json", 512, 100, err, sizeof(err)), 0);
    assert_int_equal(gw_mc_add(mc, "tokenizer.json", 1024, 10, err, sizeof(err)), 0);
    assert_int_equal(gw_mc_add(mc, "model.safetensors", 2048, 300, err, sizeof(err)), 0);
    assert_int_equal(gw_mc_config(mc, llama_config, strlen(llama_config), err, sizeof(err)), 0);
    assert_int_equal(st(mc, st_good, 136), 0);
}

static void test_finish(void **state)
{
    struct gw_mc mc;
    const char idx[] = "{\"weight_map\": {\"model.embed_tokens.weight\": \"model.safetensors\","
                       " \"model.norm.weight\": \"model.safetensors\"}}";

    (void)state;
    good_dir(&mc);
    assert_int_equal(gw_mc_finish(&mc, err, sizeof(err)), 0);
    assert_int_equal(mc.params, 36);

    /* the index agrees; then one that names a missing shard, one that counts wrong */
    assert_int_equal(gw_mc_index(&mc, idx, strlen(idx), err, sizeof(err)), 0);
    assert_int_equal(gw_mc_finish(&mc, err, sizeof(err)), 0);
    assert_int_equal(
        gw_mc_index(&mc, "{\"weight_map\": {\"a\": \"other.safetensors\"}}", 44, err, sizeof(err)),
        -1);
    assert_int_equal(
        gw_mc_index(&mc, "{\"weight_map\": {\"a\": \"model.safetensors\"}}", 42, err, sizeof(err)),
        0);
    assert_int_equal(gw_mc_finish(&mc, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "maps 1 tensors"));

    /* no tokenizer */
    gw_mc_init(&mc);
    assert_int_equal(gw_mc_add(&mc, "config.json", 512, 100, err, sizeof(err)), 0);
    assert_int_equal(gw_mc_config(&mc, llama_config, strlen(llama_config), err, sizeof(err)), 0);
    assert_int_equal(gw_mc_finish(&mc, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "tokenizer"));
    /* pickles only */
    assert_int_equal(gw_mc_add(&mc, "vocab.json", 0, 5, err, sizeof(err)), 0);
    assert_int_equal(gw_mc_add(&mc, "merges.txt", 0, 5, err, sizeof(err)), 0);
    assert_int_equal(gw_mc_add(&mc, "pytorch_model.bin", 0, 5, err, sizeof(err)), 0);
    assert_int_equal(gw_mc_finish(&mc, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "pickled"));
    /* no config */
    gw_mc_init(&mc);
    assert_int_equal(gw_mc_finish(&mc, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "config.json is missing"));
    /* weights that do not fit the config */
    gw_mc_init(&mc);
    assert_int_equal(gw_mc_add(&mc, "config.json", 512, 100, err, sizeof(err)), 0);
    assert_int_equal(gw_mc_add(&mc, "tokenizer.model", 0, 5, err, sizeof(err)), 0);
    assert_int_equal(gw_mc_config(&mc,
                                  "{\"model_type\":\"llama\",\"vocab_size\":9,"
                                  "\"hidden_size\":4}",
                                  53, err, sizeof(err)),
                     0);
    assert_int_equal(st(&mc, st_good, 136), 0);
    assert_int_equal(gw_mc_finish(&mc, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "[9, 4]"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tar_header),
        cmocka_unit_test(test_tar_base256_size),
        cmocka_unit_test(test_pax_path),
        cmocka_unit_test(test_member_names),
        cmocka_unit_test(test_add_twice_and_bounds),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_safetensors_good),
        cmocka_unit_test(test_safetensors_bad),
        cmocka_unit_test(test_safetensors_header_len),
        cmocka_unit_test(test_finish),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
